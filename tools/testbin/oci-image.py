#!/usr/bin/env python3
"""Writes an OCI image archive (an OCI image layout in a tar) from directories, one layer per
directory, that `ctr images import` loads under the given name.

Why by hand: no registry and no image builder daemon is reachable here, and an OCI image is
a few JSON documents and tar layers. The output is reproducible: entries sorted, every mtime
clamped to SOURCE_DATE_EPOCH (default 0), gzip without a timestamp, so the same inputs give
the same digest. Owners and modes come from the files as they are on disk.

  oci-image.py --out IMG.tar --name REF --layer DIR [--layer DIR ...]
               [--entrypoint JSON] [--cmd JSON] [--user U] [--env K=V ...] [--port 8080/tcp ...]
               [--workdir DIR] [--label K=V ...]
Prints the manifest digest and the sizes.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def layer_tar(root):
    """An uncompressed tar of the directory's contents (paths relative to it), as bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                paths.append(os.path.join(dirpath, name))
        for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
            arc = os.path.relpath(path, root)
            info = tar.gettarinfo(path, arcname=arc)
            if info is None:  # a socket: nothing an image can carry
                continue
            info.mtime = min(int(info.mtime), EPOCH)
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def blob(blobs, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--layer", action="append", default=[])
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--user")
    ap.add_argument("--workdir")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--port", action="append", default=[])
    ap.add_argument("--label", action="append", default=[])
    a = ap.parse_args()

    blobs = {}
    layers, diff_ids, raw_total = [], [], 0
    for d in a.layer:
        raw = layer_tar(d)
        raw_total += len(raw)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        gz = io.BytesIO()
        with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
            g.write(raw)
        layers.append(blob(blobs, gz.getvalue(), "application/vnd.oci.image.layer.v1.tar+gzip"))

    cfg = {"Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    if a.port:
        cfg["ExposedPorts"] = {p: {} for p in a.port}
    if a.label:
        cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
    created = "1970-01-01T00:00:00Z" if EPOCH == 0 else None
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"tools/testbin/oci-image.py layer {i}"} for i in range(len(layers))],
    }
    if created:
        config["created"] = created
    cfg_desc = blob(blobs, json.dumps(config, sort_keys=True).encode(),
                    "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cfg_desc, "layers": layers}
    man_desc = blob(blobs, json.dumps(manifest, sort_keys=True).encode(),
                    "application/vnd.oci.image.manifest.v1+json")
    man_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    man_desc["annotations"] = {"io.containerd.image.name": a.name,
                               "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [man_desc]}

    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps(index, sort_keys=True).encode()}
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.split(":", 1)[1]] = data
    tmp = a.out + ".part"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["blobs", "blobs/sha256"]:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(files[name]))
    os.replace(tmp, a.out)
    packed = sum(layer["size"] for layer in layers)
    print(json.dumps({"name": a.name, "digest": man_desc["digest"],
                      "compressed_bytes": packed, "uncompressed_bytes": raw_total}))


if __name__ == "__main__":
    main()
