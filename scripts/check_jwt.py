#!/usr/bin/env python3
"""Verifies a sealsync access token the way a third party would: PyJWT and the server's JWKS.

Usage: check_jwt.py JWKS_URL CA_CERT TOKEN ISSUER
Exits 0 when the token verifies (EdDSA, kid from the JWKS, issuer, audience, expiry) and a
tampered copy of it does not; prints the verified claims' names (never their values).
"""
import json
import ssl
import sys
import urllib.request

import jwt

jwks_url, ca, token, issuer = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
with urllib.request.urlopen(jwks_url, context=ctx, timeout=10) as resp:
    jwks = json.load(resp)

keys = jwt.PyJWKSet.from_dict(jwks)
kid = jwt.get_unverified_header(token)["kid"]
key = next(k for k in keys.keys if k.key_id == kid)
claims = jwt.decode(
    token,
    key=key.key,
    algorithms=["EdDSA"],
    audience="sealsync-api",
    issuer=issuer,
    options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
)
assert claims["exp"] - claims["iat"] == 3600, "lifetime is one hour"

head, body, sig = token.split(".")
tampered = ".".join([head, body, sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")])
try:
    jwt.decode(tampered, key=key.key, algorithms=["EdDSA"], audience="sealsync-api", issuer=issuer)
except jwt.InvalidTokenError:
    pass
else:
    sys.exit("a tampered token verified")

print("verified:", " ".join(sorted(claims)))
