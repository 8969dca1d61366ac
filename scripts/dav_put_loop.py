"""The CardDAV benchmark's baseline: PUT every .vcf file of a folder into an address book, one
after another on one keep-alive connection (the server's own limit for sequential writes).

    python3 scripts/dav_put_loop.py FOLDER http://USER:PASSWORD@127.0.0.1:PORT/path/to/book/
"""
import base64
import http.client
import os
import sys
from urllib.parse import urlsplit


def main() -> None:
    folder, url = sys.argv[1], urlsplit(sys.argv[2])
    conn = http.client.HTTPConnection(url.hostname, url.port)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".vcf"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            body = f.read()
        headers = {"Content-Type": "text/vcard; charset=utf-8", "If-None-Match": "*"}
        if url.username:
            token = base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn.request("PUT", url.path + name, body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status >= 300:
            sys.exit(f"PUT {name}: {resp.status}")


if __name__ == "__main__":
    main()
