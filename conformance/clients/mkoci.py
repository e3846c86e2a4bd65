#!/usr/bin/env python3
"""Write a small OCI image layout (and optionally an archive of it) for the client tests.

    mkoci.py DIR TAG SEED [--arch amd64 --arch arm64 ...] [--tar FILE]

One --arch (the default, amd64) gives an image manifest tagged TAG in DIR's
index.json; several give an image index with one manifest per platform. The
layer is a gzip'd tar of a few small files whose content includes SEED, so
each test case pushes a distinct image; the bytes are deterministic for a
given SEED. --tar also writes DIR as a tar archive (an "oci-archive", the
format `ctr images import` reads). Prints the top-level digest.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def put_blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def layer_tar(seed, arch):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = {
            "etc/berth-e2e/seed": f"{seed}\n",
            "etc/berth-e2e/arch": f"{arch}\n",
            "usr/share/berth-e2e/README": "Berth real-client end-to-end test image.\n",
        }
        for d in ("etc", "etc/berth-e2e", "usr", "usr/share", "usr/share/berth-e2e"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1700000000
            tar.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image(root, seed, arch):
    raw = layer_tar(seed, arch)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:
        f.write(raw)
    layer = put_blob(root, gz.getvalue())
    config = {
        "created": "2023-11-14T22:13:20Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": {"berth.e2e.seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "mkoci.py"}],
    }
    cfg = put_blob(root, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, **cfg},
        "layers": [{"mediaType": MT_LAYER, **layer}],
    }
    desc = put_blob(root, json.dumps(manifest, indent=2).encode())
    return {"mediaType": MT_MANIFEST, **desc, "platform": {"architecture": arch, "os": "linux"}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("tag")
    ap.add_argument("seed")
    ap.add_argument("--arch", action="append")
    ap.add_argument("--tar")
    args = ap.parse_args()
    archs = args.arch or ["amd64"]
    root = args.dir
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)

    children = [image(root, args.seed, a) for a in archs]
    if len(children) == 1:
        top = dict(children[0])
        del top["platform"]
    else:
        index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": children}
        top = {"mediaType": MT_INDEX, **put_blob(root, json.dumps(index, indent=2).encode())}
    top["annotations"] = {"org.opencontainers.image.ref.name": args.tag}

    index_path = os.path.join(root, "index.json")
    existing = {"schemaVersion": 2, "manifests": []}
    if os.path.exists(index_path):
        with open(index_path) as f:
            existing = json.load(f)
    existing["manifests"] = [
        m for m in existing["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != args.tag
    ] + [top]
    with open(index_path, "w") as f:
        json.dump(existing, f, indent=2)

    if args.tar:
        with tarfile.open(args.tar, "w") as tar:
            for name in ("oci-layout", "index.json", "blobs"):
                tar.add(os.path.join(root, name), arcname=name)
    print(top["digest"])


if __name__ == "__main__":
    main()
