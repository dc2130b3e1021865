#!/usr/bin/env python3
"""Mint the HS256 demo tokens used by examples/policy.toml (standard library only).

usage: mint-hs256.py SUB GROUPS EXP [NBF]   e.g. mint-hs256.py alice developers 4102444800
The key is the example policy's demo key; never use it for anything real.
"""
import base64, hashlib, hmac, json, sys

KEY = b"tollgate-example-demo-hmac-key-32bytes!!"  # 40 bytes; the policy holds it base64url


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(sub: str, groups: list, exp: int, nbf=None, aud="gogs", iss="https://id.example.com") -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": "demo-hs256"}
    claims = {"iss": iss, "aud": aud, "sub": sub, "groups": groups, "exp": exp}
    if nbf is not None:
        claims["nbf"] = nbf
    signing_input = b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(
        json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(KEY, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    groups = [g for g in sys.argv[2].split(",") if g]
    nbf = int(sys.argv[4]) if len(sys.argv) > 4 else None
    print(mint(sys.argv[1], groups, int(sys.argv[3]), nbf))
