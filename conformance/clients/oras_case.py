#!/usr/bin/env python3
"""oras-py (PyPI `oras`) against Berth.

    oras_case.py push-pull REGISTRY REPO:TAG WORKDIR (--creds USER:SECRET | --authfile FILE) (--insecure | --ca FILE)
    oras_case.py attach    REGISTRY REPO SUBJECT_DIGEST WORKDIR (--creds ... | --authfile ...) (--insecure | --ca ...)

push-pull pushes a file artifact with oras-py's own push(), pulls it back
with pull() and compares the content. attach pushes an artifact whose
manifest has a `subject` (what cosign and notation do), built here and sent
through oras-py's token-authenticated session, then lists
GET /v2/REPO/referrers/SUBJECT_DIGEST and looks for it with its
artifactType. Both use oras-py's default ("token") auth backend, which
follows the registry's Bearer challenge.

Prints one JSON object with the digests seen; exits non-zero on a mismatch.
"""
import argparse
import hashlib
import json
import os
import sys

import oras.client

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
ACCEPT = [
    MT_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
]
ARTIFACT_TYPE = "application/vnd.berth.e2e.signature.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fail(msg):
    print(f"oras_case: {msg}", file=sys.stderr)
    sys.exit(1)


def client(args):
    tls = True if args.insecure else args.ca
    reg = oras.client.OrasClient(hostname=args.registry, insecure=args.insecure, tls_verify=tls)
    if args.creds:
        user, _, secret = args.creds.partition(":")
        reg.auth.set_basic_auth(user, secret)
    return reg


def get_raw_manifest(reg, registry, repo, ref):
    url = f"{reg.prefix}://{registry}/v2/{repo}/manifests/{ref}"
    resp = reg.do_request(url, "GET", headers={"Accept": ", ".join(ACCEPT)})
    if resp.status_code != 200:
        fail(f"GET {url}: {resp.status_code} {resp.text}")
    return resp


def push_pull(args):
    reg = client(args)
    os.makedirs(args.workdir, exist_ok=True)
    os.chdir(args.workdir)
    content = f"berth e2e artifact {args.ref}\n".encode()
    with open("artifact.txt", "wb") as f:
        f.write(content)
    target = f"{args.registry}/{args.ref}"
    resp = reg.push(
        target=target,
        files=["artifact.txt:text/plain"],
        config_path=args.authfile,
    )
    if resp.status_code != 201:
        fail(f"push: PUT manifest answered {resp.status_code} {resp.text}")
    sent = sha256(resp.request.body if isinstance(resp.request.body, bytes) else resp.request.body.encode())
    acked = resp.headers.get("Docker-Content-Digest")
    outdir = os.path.join(args.workdir, "pulled")
    files = reg.pull(target=target, outdir=outdir, config_path=args.authfile)
    if len(files) != 1:
        fail(f"pull returned {files}")
    with open(files[0], "rb") as f:
        got = f.read()
    if got != content:
        fail(f"pulled content differs: {got!r} != {content!r}")
    repo, _, tag = args.ref.rpartition(":")
    raw = get_raw_manifest(reg, args.registry, repo, tag)
    print(json.dumps({
        "pushed": sent,
        "push_response": acked,
        "pulled": sha256(raw.content),
        "pulled_header": raw.headers.get("Docker-Content-Digest"),
    }))


def attach(args):
    reg = client(args)
    repo = args.ref
    container = reg.get_container(f"{args.registry}/{repo}")
    reg.auth.load_configs(container, configs=[args.authfile] if args.authfile else None)

    subject = get_raw_manifest(reg, args.registry, repo, args.subject)
    if sha256(subject.content) != args.subject:
        fail(f"subject {args.subject} served with digest {sha256(subject.content)}")

    os.makedirs(args.workdir, exist_ok=True)
    empty = os.path.join(args.workdir, "empty.json")
    with open(empty, "wb") as f:
        f.write(b"{}")
    payload = os.path.join(args.workdir, "signature.json")
    with open(payload, "wb") as f:
        f.write(json.dumps({"signed": args.subject}).encode())

    descriptors = []
    for path, mt in ((empty, MT_EMPTY), (payload, ARTIFACT_TYPE)):
        with open(path, "rb") as f:
            data = f.read()
        desc = {"mediaType": mt, "digest": sha256(data), "size": len(data)}
        resp = reg.upload_blob(path, container, desc)
        if resp.status_code not in (200, 201, 202):
            fail(f"blob upload {desc['digest']}: {resp.status_code} {resp.text}")
        descriptors.append(desc)

    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptors[0],
        "layers": [descriptors[1]],
        "subject": {"mediaType": MT_MANIFEST, "digest": args.subject, "size": len(subject.content)},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    # The subject may be a Docker v2 manifest (docker, podman push it so).
    subject_type = subject.headers.get("Content-Type", MT_MANIFEST).split(";")[0]
    manifest["subject"]["mediaType"] = subject_type
    body = json.dumps(manifest, indent=2).encode()
    digest = sha256(body)
    url = f"{reg.prefix}://{args.registry}/v2/{repo}/manifests/{digest}"
    resp = reg.do_request(url, "PUT", data=body, headers={"Content-Type": MT_MANIFEST})
    if resp.status_code != 201:
        fail(f"PUT {url}: {resp.status_code} {resp.text}")
    if resp.headers.get("Docker-Content-Digest") != digest:
        fail(f"PUT answered Docker-Content-Digest {resp.headers.get('Docker-Content-Digest')}, sent {digest}")
    oci_subject = resp.headers.get("OCI-Subject")

    url = f"{reg.prefix}://{args.registry}/v2/{repo}/referrers/{args.subject}"
    resp = reg.do_request(url, "GET", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    if resp.status_code != 200:
        fail(f"GET {url}: {resp.status_code} {resp.text}")
    index = resp.json()
    found = [m for m in index.get("manifests", []) if m.get("digest") == digest]
    if not found:
        fail(f"referrers of {args.subject} do not list {digest}: {json.dumps(index)}")
    if found[0].get("artifactType") != ARTIFACT_TYPE:
        fail(f"referrer listed with artifactType {found[0].get('artifactType')!r}, want {ARTIFACT_TYPE}")
    if found[0].get("size") != len(body):
        fail(f"referrer listed with size {found[0].get('size')}, want {len(body)}")

    resp = reg.do_request(url + "?artifactType=" + ARTIFACT_TYPE.replace("+", "%2B"), "GET")
    filtered = [m["digest"] for m in resp.json().get("manifests", [])]
    if resp.status_code != 200 or digest not in filtered:
        fail(f"filtered referrers: {resp.status_code} {resp.text}")

    print(json.dumps({
        "pushed": digest,
        "oci_subject": oci_subject,
        "referrer": found[0],
        "filters_applied": resp.headers.get("OCI-Filters-Applied"),
    }))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["push-pull", "attach"])
    ap.add_argument("registry")
    ap.add_argument("ref")
    ap.add_argument("rest", nargs="+")
    ap.add_argument("--creds")
    ap.add_argument("--authfile")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--ca")
    args = ap.parse_args()
    if args.action == "push-pull":
        (args.workdir,) = args.rest
        push_pull(args)
    else:
        args.subject, args.workdir = args.rest
        attach(args)


if __name__ == "__main__":
    main()
