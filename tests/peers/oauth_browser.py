#!/usr/bin/env python3
"""A stand-in browser for the sign-in tests: `$BROWSER` points at it, bridge-client runs it with
the authorization URL. It follows the redirects, fills oidc-provider's devInteractions login
form (any login and password) and its consent form, and follows the last redirect to
bridge-client's loopback callback. Standard library only.

Env: OAUTH_BROWSER_LOG  a file to which one line per run is appended (the tests count sign-ins).
It never prints the URL's query or the code: they are secrets.
"""
import http.cookiejar
import html.parser
import os
import sys
import urllib.parse
import urllib.request


class Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get"), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


class Redirects(urllib.request.HTTPRedirectHandler):
    """Says where each redirect goes (scheme, host and path only: the query holds secrets)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        u = urllib.parse.urlsplit(newurl)
        print(f"oauth_browser: {code} -> {u.scheme}://{u.netloc}{u.path}", file=sys.stderr)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def main():
    if len(sys.argv) != 2:
        print("usage: oauth_browser.py URL", file=sys.stderr)
        return 2
    log = os.environ.get("OAUTH_BROWSER_LOG")
    if log:
        with open(log, "a") as f:
            f.write("sign-in\n")
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), Redirects()
    )
    resp = opener.open(sys.argv[1], timeout=15)
    for _ in range(6):
        page = resp.read().decode("utf-8", "replace")
        final = urllib.parse.urlsplit(resp.geturl())
        if final.path.startswith("/callback"):
            print(f"oauth_browser: redirected to the callback on port {final.port}", file=sys.stderr)
            return 0
        parser = Forms()
        parser.feed(page)
        if not parser.forms:
            print(f"oauth_browser: no form at {final.path}: {page[:300]!r}", file=sys.stderr)
            return 1
        form = parser.forms[0]
        fields = dict(form["fields"])
        if "login" in fields:
            fields["login"] = "alice"
            fields["password"] = "any"
        action = urllib.parse.urljoin(resp.geturl(), form["action"])
        data = urllib.parse.urlencode(fields).encode()
        resp = opener.open(urllib.request.Request(action, data=data, method="POST"), timeout=15)
    print("oauth_browser: too many forms", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
