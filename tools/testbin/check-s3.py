#!/usr/bin/env python3
"""Checks the S3 server start-s3.sh started, with nothing but the standard library: PUTs an
object into the bucket, GETs it back and compares, lists it, checks that a wrong secret key and
an unsigned request both get 403, then DELETEs the object. Reads COUCHSHARE_S3_* from the
environment (source WORK_DIR/s3.env first). Requests are path-style and signed with AWS
Signature Version 4 (the signer below, ~30 lines). Exits non-zero on the first failure.
Usage: check-s3.py"""
import datetime, hashlib, hmac, os, secrets, sys, time, urllib.error, urllib.parse, urllib.request

ENDPOINT = os.environ["COUCHSHARE_S3_ENDPOINT"].rstrip("/")
ACCESS = os.environ["COUCHSHARE_S3_ACCESS_KEY"]
SECRET = os.environ["COUCHSHARE_S3_SECRET_KEY"]
BUCKET = os.environ["COUCHSHARE_S3_BUCKET"]
REGION = os.environ["COUCHSHARE_S3_REGION"]


def sign(method, path, query, body, access, secret):
    """The headers of a SigV4-signed S3 request (path already URI-encoded)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = urllib.parse.urlsplit(ENDPOINT).netloc
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query.items()))
    canonical = "\n".join([method, path, canonical_query,
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                           signed, payload])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={signed}, Signature={signature}")
    del headers["host"]
    return headers


def request(method, key="", body=b"", query=None, access=ACCESS, secret=SECRET, signed=True):
    path = "/" + BUCKET + ("/" + urllib.parse.quote(key, safe="/-_.~") if key else "")
    query = query or {}
    headers = sign(method, path, query, body, access, secret) if signed else {}
    url = ENDPOINT + path + ("?" + urllib.parse.urlencode(sorted(query.items())) if query else "")
    req = urllib.request.Request(url, data=body if method == "PUT" else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


last = time.monotonic()


def check(what, ok, detail=""):
    global last
    now = time.monotonic()
    print(("ok    " if ok else "FAIL  ") + what + f"  ({detail}; {(now - last) * 1000:.0f} ms)")
    last = now
    if not ok:
        sys.exit(1)


key = f"check-s3/{secrets.token_hex(4)}/object with spaces.json"
body = b'{"hello": "s3"}\n' + secrets.token_bytes(64 * 1024)
status, _ = request("PUT", key, body)
check(f"PUT {BUCKET}/{key} ({len(body)} bytes)", status == 200, status)
status, got = request("GET", key)
check("GET returns the same bytes", status == 200 and got == body, f"{status}, {len(got)} bytes")
status, listing = request("GET", query={"list-type": "2", "prefix": key.split("/")[0] + "/"})
check("ListObjectsV2 lists it", status == 200 and b"object with spaces.json" in listing, status)
status, _ = request("GET", key, secret=SECRET[:-1] + ("0" if SECRET[-1] != "0" else "1"))
check("GET with a wrong secret key is refused with 403", status == 403, status)
status, _ = request("GET", key, access="AKIAWRONGWRONGWRONG0")
check("GET with an unknown access key is refused with 403", status == 403, status)
status, _ = request("GET", key, signed=False)
check("unsigned GET is refused with 403", status == 403, status)
status, _ = request("DELETE", key)
check("DELETE", status == 204, status)
status, _ = request("GET", key)
check("GET after DELETE is 404", status == 404, status)
