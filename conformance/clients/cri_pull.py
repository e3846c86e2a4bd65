#!/usr/bin/env python3
"""Pull an image through containerd's CRI ImageService, as kubelet does.

    cri_pull.py SOCKET IMAGE AUTHFILE {userpass|auth|none|anonymous} GENDIR

Credentials come from AUTHFILE, a dockerconfigjson (the content of a
kubernetes.io/dockerconfigjson Secret), looked up by the image's registry
host. "userpass" sends AuthConfig{username, password} decoded from the
entry's `auth`; "auth" sends AuthConfig{auth} unchanged. server_address is
left empty, as kubelet leaves it. "none" pulls without credentials and
expects the pull to be refused; "anonymous" pulls without credentials and
expects it to succeed (a public mirror; AUTHFILE is not read, pass "-"). The CRI proto (cri.proto beside this file)
is compiled into GENDIR first.

Prints one JSON object: {"image_ref": ..., "id": ..., "repo_digests": [...]}
(for "none": {"refused": "<error>"}).
"""
import base64
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs(gendir):
    os.makedirs(gendir, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}",
         f"--python_out={gendir}", f"--grpc_python_out={gendir}", "cri.proto"],
        check=True,
    )
    sys.path.insert(0, gendir)
    import cri_pb2
    import cri_pb2_grpc
    return cri_pb2, cri_pb2_grpc


def main():
    socket, image, authfile, mode, gendir = sys.argv[1:6]
    import grpc
    pb, pb_grpc = load_stubs(gendir)

    entry = None
    if mode in ("userpass", "auth"):
        host = image.split("/", 1)[0]
        with open(authfile) as f:
            entry = json.load(f)["auths"][host]
    if mode == "userpass":
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        auth = pb.AuthConfig(username=user, password=password)
    elif mode == "auth":
        auth = pb.AuthConfig(auth=entry["auth"])
    elif mode in ("none", "anonymous"):
        auth = None
    else:
        raise SystemExit(f"unknown mode {mode}")

    with grpc.insecure_channel(f"unix://{socket}") as channel:
        images = pb_grpc.ImageServiceStub(channel)
        if mode == "none":
            try:
                pulled = images.PullImage(
                    pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=120
                )
            except grpc.RpcError as e:
                print(json.dumps({"refused": f"{e.code().name}: {e.details()}"}))
                return
            raise SystemExit(f"pull without credentials succeeded: {pulled.image_ref}")
        pulled = images.PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=image), auth=auth), timeout=120
        )
        status = images.ImageStatus(
            pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=30
        )
    print(json.dumps({
        "image_ref": pulled.image_ref,
        "id": status.image.id,
        "repo_tags": list(status.image.repo_tags),
        "repo_digests": list(status.image.repo_digests),
    }))


if __name__ == "__main__":
    main()
