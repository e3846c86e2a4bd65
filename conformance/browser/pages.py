#!/usr/bin/env python3
"""Berth's web pages in a real browser (issue #11), driven by Selenium.

    pages.py --base http://127.0.0.1:PORT --user alice --out DIR [--docs DIR]

The password of --user is read from the environment (BERTH_BROWSER_PASSWORD)
so it stays out of the process list. Chromium and chromedriver are Debian's
(/usr/bin/chromium, /usr/bin/chromedriver; override with CHROMIUM and
CHROMEDRIVER); nothing is downloaded. skopeo pushes the images.

With JavaScript on, the script signs in, creates a token on
/user/settings/applications, pushes images with skopeo using that token,
finds alice/demo on the packages page, opens its versions and version v1
(checking layer digests and sizes), deletes tag `latest` through the page,
signs out and checks that the private pages it saw are gone (404 page,
empty package list). A second browser with JavaScript off signs in and reads
the versions page. No console message may mention a Content Security Policy
violation. Every step prints "PASS step" or "FAIL step: reason"; the first
failure ends the run (exit 1) after saving a screenshot and the page source.

Screenshots (full page) go to --out; with --docs, the README's two
screenshots (1280x900 viewport) are written there too.
"""
import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import tarfile
import tempfile
import time
import traceback
from urllib.parse import urljoin, urlparse

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
WIDTH, HEIGHT = 1280, 900

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def fmt_size(n):
    """Berth's format::size: `512 B`, `1.5 KiB`, `12.3 MiB`."""
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024.0, ["KiB", "MiB", "GiB", "TiB", "PiB"]
    unit = 0
    while value >= 1024.0 and unit < len(units) - 1:
        value /= 1024.0
        unit += 1
    return f"{value:.1f} {units[unit]}"


# ---------------------------------------------------------------------------
# A small OCI image layout, built here (deterministic for a given seed).


def _blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(root, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def _layer(files):
    """A gzip'd tar of FILES (path -> bytes), with its uncompressed digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({os.path.dirname(p) for p in files} - {""})
        for d in sorted({"/".join(d.split("/")[: i + 1]) for d in dirs for i in range(d.count("/") + 1)}):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:
        f.write(raw.getvalue())
    return gz.getvalue(), "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()


def build_image(root, tag, seed, title, base_kib, app_kib):
    """Write an OCI layout at ROOT with one image (two layers) tagged TAG.
    Returns what the version page should show: layers, sizes, digest."""
    os.makedirs(os.path.join(root, "blobs", "sha256"), exist_ok=True)
    rnd = random.Random(seed)
    base, base_diff = _layer(
        {
            "usr/lib/demo/base.bin": rnd.randbytes(base_kib * 1024),
            "etc/os-release": b'NAME="Berth demo"\nID=berth-demo\n',
        }
    )
    app, app_diff = _layer(
        {
            "app/server.bin": rnd.randbytes(app_kib * 1024),
            "app/README": f"{title} ({seed})\n".encode(),
        }
    )
    layers = [_blob(root, base), _blob(root, app)]
    config = {
        "created": "2026-12-01T09:30:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_PORT=8080"],
            "Entrypoint": ["/app/server.bin"],
            "Cmd": ["--listen", ":8080"],
            "WorkingDir": "/app",
            "User": "1000:1000",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": title,
                "org.opencontainers.image.description": f"{title}: a demo image for Berth's browser test",
                "org.opencontainers.image.source": "https://example.com/alice/" + title,
                "org.opencontainers.image.version": tag,
                "berth.test.seed": seed,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [base_diff, app_diff]},
        "history": [
            {"created": "2026-12-01T09:29:00Z", "created_by": "ADD base.tar /"},
            {"created": "2026-12-01T09:30:00Z", "created_by": "COPY app /app"},
        ],
    }
    cfg = _blob(root, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, **cfg},
        "layers": [{"mediaType": MT_LAYER, **layer} for layer in layers],
    }
    mbytes = json.dumps(manifest, indent=2).encode()
    mdesc = _blob(root, mbytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": MT_MANIFEST, **mdesc, "annotations": {"org.opencontainers.image.ref.name": tag}}
        ],
    }
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return {
        "digest": mdesc["digest"],
        "layers": layers,
        "layers_size": sum(layer["size"] for layer in layers),
        # A version's size: the manifest with everything it references.
        "total": mdesc["size"] + cfg["size"] + sum(layer["size"] for layer in layers),
        # A package's size: the blobs linked to the repository (no manifests).
        "blobs": cfg["size"] + sum(layer["size"] for layer in layers),
    }


# ---------------------------------------------------------------------------
# The browser.


class Browser:
    """One Chromium with helpers that navigate, keep the console and record
    the HTTP status of each document."""

    def __init__(self, name, base, out, javascript=True):
        self.name, self.base, self.out = name, base.rstrip("/"), out
        self.console = []  # every console entry seen, with the URL it came on
        self.shots = 0
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            f"--window-size={WIDTH},{HEIGHT}",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            "--lang=en-US",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--password-store=basic",
            "--disable-features=Translate,PasswordLeakDetection,AutofillServerCommunication",
        ):
            opts.add_argument(arg)
        prefs = {"credentials_enable_service": False, "profile.password_manager_enabled": False}
        if javascript:
            opts.add_argument("--blink-settings=preferredColorScheme=1")  # light
        else:
            opts.add_argument("--blink-settings=scriptEnabled=false,preferredColorScheme=1")
            prefs["profile.managed_default_content_settings.javascript"] = 2
        opts.add_experimental_option("prefs", prefs)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = Service(executable_path=CHROMEDRIVER, log_output=os.path.join(out, f"chromedriver-{name}.log"))
        self.driver = webdriver.Chrome(options=opts, service=service)
        self.driver.set_page_load_timeout(30)
        self.status = None  # (url, status) of the last document loaded

    def url(self, path):
        return urljoin(self.base + "/", path.lstrip("/"))

    def drain(self):
        """Collect console messages and the last document's HTTP status."""
        d = self.driver
        for e in d.get_log("browser"):
            self.console.append((d.current_url, e.get("level"), e.get("message", "")))
        for e in d.get_log("performance"):
            msg = json.loads(e["message"])["message"]
            if msg.get("method") == "Network.responseReceived" and msg["params"].get("type") == "Document":
                r = msg["params"]["response"]
                self.status = (r["url"], r["status"])

    def get(self, path):
        self.driver.get(self.url(path))
        self.drain()
        return self.status[1] if self.status else None

    def submit(self, element):
        """Click a submit button or link and wait for the next document."""
        html = self.driver.find_element(By.TAG_NAME, "html")
        element.click()

        def replaced(_):
            try:
                html.is_enabled()
                return False
            except StaleElementReferenceException:
                return True
            except WebDriverException:  # mid-navigation ("Node ... does not belong to the document")
                return False

        WebDriverWait(self.driver, 20, poll_frequency=0.05).until(replaced)
        WebDriverWait(self.driver, 20, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        self.drain()
        return self.status[1] if self.status else None

    def one(self, css):
        try:
            return self.driver.find_element(By.CSS_SELECTOR, css)
        except NoSuchElementException:
            raise Failure(f"no element {css!r} on {self.driver.current_url}")

    def all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def link(self, text):
        try:
            return self.driver.find_element(By.LINK_TEXT, text)
        except NoSuchElementException:
            raise Failure(f"no link {text!r} on {self.driver.current_url}")

    def path(self):
        return urlparse(self.driver.current_url).path

    def shot(self, label):
        """A full-page PNG into the output directory."""
        self.shots += 1
        name = os.path.join(self.out, f"{self.name}-{self.shots:02d}-{label}.png")
        d = self.driver
        try:
            m = d.execute_cdp_cmd("Page.getLayoutMetrics", {})
            size = m.get("cssContentSize") or m["contentSize"]
            shot = d.execute_cdp_cmd(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": max(size["width"], WIDTH),
                             "height": max(size["height"], 1), "scale": 1},
                },
            )
            with open(name, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        except Exception:  # fall back to the viewport
            d.save_screenshot(name)
        return name

    def viewport_png(self, dest):
        """The top WIDTH x HEIGHT CSS pixels of the page (headless windows
        lose some height to the frame, so clip rather than trust the window)."""
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True,
             "clip": {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT, "scale": 1}},
        )
        with open(dest, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    def quit(self):
        try:
            self.drain()
        except Exception:
            pass
        self.driver.quit()


# ---------------------------------------------------------------------------
# Steps


class Run:
    def __init__(self, args):
        self.args = args
        self.passed = 0
        self.browsers = []
        self.current = None

    def step(self, name, fn):
        """Run one step; on failure save what the browser shows and stop."""
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure ends the run
            reason = str(e) if isinstance(e, Failure) else f"{type(e).__name__}: {e}"
            print(f"FAIL {name}: {reason}", flush=True)
            if not isinstance(e, Failure):
                traceback.print_exc()
            b = self.current
            if b is not None:
                try:
                    b.shot("FAILED-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
                    with open(os.path.join(self.args.out, f"{b.name}-failed-page.html"), "w") as f:
                        f.write(b.driver.page_source)
                    print(f"     at {b.driver.current_url} (status {b.status}); page saved in {self.args.out}")
                except Exception:
                    pass
            raise SystemExit(1)
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)


def skopeo_push(args, layout, tag, dest_ref, token):
    policy = os.path.join(os.path.dirname(layout), "policy.json")
    with open(policy, "w") as f:
        json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
    cmd = [
        args.skopeo, "--policy", policy, "copy", "--quiet",
        "--dest-tls-verify=false", "--dest-creds", f"{args.user}:{token}",
        f"oci:{layout}:{tag}", f"docker://{dest_ref}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    shown = " ".join(c if not c.startswith(args.user + ":") else args.user + ":<token>" for c in cmd)
    check(r.returncode == 0, f"{shown} failed ({r.returncode}): {r.stderr.strip()[-600:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--out", required=True, help="directory for screenshots and logs")
    ap.add_argument("--docs", help="also write the README screenshots into this directory")
    ap.add_argument("--skopeo", default="skopeo")
    ap.add_argument("--registry", help="host:port skopeo pushes to (default: that of --base)")
    args = ap.parse_args()
    password = os.environ.get("BERTH_BROWSER_PASSWORD")
    if not password:
        ap.error("set BERTH_BROWSER_PASSWORD to the user's password")
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything

    user = args.user
    host = urlparse(args.base).netloc  # what the pages show in pull commands
    registry = args.registry or host
    pkg = f"/{user}/-/packages/container/demo"
    run = Run(args)
    work = tempfile.mkdtemp(prefix="berth-browser-")
    st = {}  # state shared by the steps
    started = time.monotonic()

    try:
        b = Browser("js", args.base, args.out, javascript=True)
        run.browsers.append(b)
        run.current = b

        def sign_in(br=None):
            br = br or b
            status = br.get("/user/login")
            check(status == 200, f"GET /user/login answered {status}")
            br.one("#user").send_keys(user)
            br.one("#password").send_keys(password)
            br.shot("login")
            status = br.submit(br.one("form[action='/user/login'] button[type=submit]"))
            check(status == 200, f"after signing in the page answered {status}")
            check(br.path() == "/", f"signing in led to {br.driver.current_url}, expected /")
            nav = br.one("header nav").text
            check(user in nav and "Sign out" in nav, f"header after sign-in shows {nav!r}")
            check(f"Signed in as {user}" in br.text(), "home page does not say 'Signed in as'")
            br.shot("signed-in")

        run.step("sign in with the form", sign_in)

        def create_token():
            status = b.get("/user/settings/applications")
            check(status == 200, f"GET /user/settings/applications answered {status}")
            b.one("#name").send_keys("browser-push")
            read = b.one("input[type=checkbox][name=read]")
            write = b.one("input[type=checkbox][name=write]")
            if not read.is_selected():
                read.click()
            if not write.is_selected():
                write.click()
            check(read.is_selected() and write.is_selected(), "read/write checkboxes did not check")
            status = b.submit(b.one("form.stack button[type=submit]"))
            check(status == 200, f"creating the token answered {status}")
            secret = b.one("#new-token").text.strip()
            check(len(secret) >= 20 and " " not in secret, f"#new-token shows {secret!r}")
            st["token"] = secret
            rows = [r.text for r in b.all("table.list tbody tr")]
            row = next((r for r in rows if r.startswith("browser-push")), "")
            check("read:package" in row and "write:package" in row and "active" in row,
                  f"token table row is {row!r} (rows: {rows})")
            # berth.js shows the copy buttons (progressive enhancement).
            copy = b.all("section.notice button.copy")
            check(copy and copy[0].is_displayed(), "copy button not shown with JavaScript on (berth.js not run?)")
            # Blur the secret in the artifact.
            b.driver.execute_script(
                "document.querySelectorAll('#new-token, [data-copy]').forEach(e => e.style.filter = 'blur(4px)')")
            b.shot("token-created")

        run.step("create a read+write token on /user/settings/applications", create_token)

        def push():
            images = {}
            for name, tags, seed, base_kib, app_kib in (
                ("demo", ["v1", "latest"], "demo-v1", 740, 96),
                ("api-server", ["2.3.0"], "api-2.3.0", 1900, 310),
                ("tools/builder", ["0.9.1"], "builder-0.9.1", 420, 55),
            ):
                layout = os.path.join(work, name.replace("/", "-"), "layout")
                img = build_image(layout, tags[0], seed, name.split("/")[-1], base_kib, app_kib)
                for tag in tags:
                    skopeo_push(args, layout, tags[0], f"{registry}/{user}/{name}:{tag}", st["token"])
                images[name] = img
            st["images"] = images

        run.step("push alice/demo:v1, :latest (and two more packages) with skopeo and the token", push)

        def packages():
            status = b.get(f"/{user}/-/packages")
            check(status == 200, f"GET /{user}/-/packages answered {status}")
            names = [a.text for a in b.all("table.list tbody tr td:first-child a")]
            for want in (f"{user}/demo", f"{user}/api-server", f"{user}/tools/builder"):
                check(want in names, f"{want} not listed on /{user}/-/packages (listed: {names})")
            row = next(r for r in b.all("table.list tbody tr") if r.text.startswith(f"{user}/demo"))
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            check(cells[1] == "2", f"alice/demo shows {cells[1]!r} tags, expected 2 (row {cells})")
            check(cells[2] in ("v1", "latest"), f"alice/demo newest tag {cells[2]!r} (row {cells})")
            blobs = st["images"]["demo"]["blobs"]
            check(cells[4] == fmt_size(blobs),
                  f"alice/demo size {cells[4]!r}, expected {fmt_size(blobs)} (config + layers = {blobs} bytes)")
            b.shot("packages")
            if args.docs:
                b.viewport_png(os.path.join(args.docs, "screenshot-packages.png"))
            status = b.submit(b.link(f"{user}/demo"))
            check(status == 200, f"the package page answered {status}")
            check(b.path() == pkg, f"clicking alice/demo led to {b.driver.current_url}, expected {pkg}")
            check(b.one("h1").text == f"{user}/demo", f"package page h1 is {b.one('h1').text!r}")
            b.shot("package-newest")

        run.step("find alice/demo on /alice/-/packages and open it", packages)

        def versions():
            status = b.submit(b.one("nav.tabs").find_element(By.LINK_TEXT, "Versions"))
            check(status == 200, f"the versions page answered {status}")
            check(b.path() == pkg + "/versions", f"Versions led to {b.driver.current_url}")
            listed = [a.text for a in b.all("table.list tbody tr td:first-child a")]
            check(sorted(listed) == ["latest", "v1"], f"versions listed: {listed}, expected v1 and latest")
            b.shot("versions")
            status = b.submit(b.link("v1"))
            check(status == 200, f"the v1 page answered {status}")
            check(b.path() == pkg + "/v1", f"v1 led to {b.driver.current_url}")

        run.step("open the versions page and version v1", versions)

        def version_page():
            img = st["images"]["demo"]
            check(b.one("main h2").text.strip() == "v1", f"version heading {b.one('main h2').text!r}")
            facts = dict(zip([e.text for e in b.all("main > dl.facts dt")], [e.text for e in b.all("main > dl.facts dd")]))
            check(facts.get("Digest") == img["digest"], f"Digest shown {facts.get('Digest')!r}, pushed {img['digest']}")
            total = facts.get("Total size", "")
            check(total.startswith(fmt_size(img["total"]) + " "),
                  f"Total size shows {total!r}, expected {fmt_size(img['total'])} "
                  f"(manifest + config + layers = {img['total']} bytes)")
            tags = sorted(a.text for a in b.all("main > dl.facts a.tag"))
            check(tags == ["latest", "v1"], f"tags on this digest: {tags}")
            heads = [h.text for h in b.all("h4")]
            want_head = f"Layers (2, {fmt_size(img['layers_size'])})"
            check(want_head in heads, f"layers heading {want_head!r} not among {heads}")
            rows = b.all("h4 + table.list tbody tr")
            layer_rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
            layer_rows = [r for r in layer_rows if len(r) == 4]
            for i, layer in enumerate(img["layers"]):
                match = [r for r in layer_rows if r[1] == layer["digest"]]
                check(match, f"layer {i + 1} {layer['digest']} not shown (rows {layer_rows})")
                check(match[0][2] == MT_LAYER, f"layer {i + 1} media type {match[0][2]!r}")
                check(match[0][3] == fmt_size(layer["size"]),
                      f"layer {i + 1} size {match[0][3]!r}, expected {fmt_size(layer['size'])}")
            body = b.text()
            for want in ("org.opencontainers.image.title", "linux/amd64", f"{host}/{user}/demo:v1"):
                check(want in body, f"{want!r} not on the version page")
            copy = [e for e in b.all("ul.commands button.copy") if e.is_displayed()]
            check(len(copy) == 3, f"{len(copy)} copy buttons shown with JavaScript on, expected 3")
            check(b.link("Delete v1…"), "no 'Delete v1…' link")
            b.shot("version-v1")
            if args.docs:
                b.viewport_png(os.path.join(args.docs, "screenshot-version.png"))

        run.step("version v1 shows digest, layer digests, media types and sizes", version_page)

        def delete_latest():
            status = b.submit(b.one("main > dl.facts").find_element(By.LINK_TEXT, "latest"))
            check(status == 200 and b.path() == pkg + "/latest", f"tag link led to {b.driver.current_url} ({status})")
            status = b.submit(b.link("Delete latest…"))
            check(status == 200, f"the confirm page answered {status}")
            check(b.path() == pkg + "/latest/delete", f"Delete latest… led to {b.driver.current_url}")
            check("Delete latest?" in b.text(), "confirm page does not ask 'Delete latest?'")
            b.shot("confirm-delete")
            status = b.submit(b.one("main form button[type=submit].danger"))
            check(status == 200, f"after deleting, the page answered {status}")
            check(b.path() == pkg + "/versions", f"deleting led to {b.driver.current_url}")
            notice = b.all("p.notice")
            check(notice and "Deleted latest" in notice[0].text, f"no 'Deleted latest' notice: {[n.text for n in notice]}")
            listed = [a.text for a in b.all("table.list tbody tr td:first-child a")]
            check(listed == ["v1"], f"versions after deleting latest: {listed}, expected only v1")
            b.shot("deleted-latest")
            status = b.get(pkg + "/latest")
            check(status == 404, f"GET {pkg}/latest after the delete answered {status}, expected 404")
            status = b.get(pkg + "/v1")
            check(status == 200, f"GET {pkg}/v1 after deleting latest answered {status}")
            tags = [a.text for a in b.all("main > dl.facts a.tag")]
            check(tags == ["v1"], f"v1 page lists tags {tags} after deleting latest")

        run.step("delete tag latest through the version page", delete_latest)

        def sign_out():
            status = b.submit(b.one("header form[action='/user/logout'] button"))
            check(status == 200 and b.path() == "/", f"signing out led to {b.driver.current_url} ({status})")
            nav = b.one("header nav").text
            check("Sign in" in nav and "Sign out" not in nav, f"header after sign-out shows {nav!r}")
            cookies = [c["name"] for c in b.driver.get_cookies()]
            check("berth_session" not in cookies, f"session cookie still set after sign-out: {cookies}")
            b.shot("signed-out")

        run.step("sign out with the header button", sign_out)

        def gone():
            for path in (pkg, pkg + "/versions", pkg + "/v1", f"/{user}/-/packages/container/api-server"):
                status = b.get(path)
                check(status == 404, f"GET {path} signed out answered {status}, expected 404")
                check(b.one("main h1").text == "Not found", f"{path} shows h1 {b.one('main h1').text!r}")
                check(b.one("p.status").text == "404", f"{path} shows status {b.one('p.status').text!r}")
                check("/demo" not in b.text(), f"{path}: the 404 page names the package")
            b.shot("package-404")
            status = b.get(pkg + "/v1/delete")
            check(status in (403, 404), f"GET {pkg}/v1/delete signed out answered {status}")
            status = b.get(f"/{user}/-/packages")
            check(status == 200, f"GET /{user}/-/packages signed out answered {status}")
            names = [a.text for a in b.all("table.list tbody tr td:first-child a")]
            check(not names, f"signed out, /{user}/-/packages still lists {names}")
            check("No container packages" in b.text(), "packages page signed out does not say 'No container packages'")
            b.shot("packages-signed-out")
            status = b.get("/")
            check("demo" not in b.text(), "home page (latest pushes) shows alice/demo signed out")
            status = b.get("/user/settings/applications")
            check(b.path() == "/user/login", f"tokens page signed out led to {b.driver.current_url}")

        run.step("signed out, the package pages answer 404 and the list is empty", gone)

        # ------------------------------------------------------------------
        # A second browser with JavaScript off.
        nojs = Browser("nojs", args.base, args.out, javascript=False)
        run.browsers.append(nojs)
        run.current = nojs

        def nojs_flow():
            sign_in(nojs)
            status = nojs.get(pkg + "/versions")
            check(status == 200, f"GET {pkg}/versions without JavaScript answered {status}")
            listed = [a.text for a in nojs.all("table.list tbody tr td:first-child a")]
            check(listed == ["v1"], f"versions without JavaScript: {listed}")
            nojs.shot("versions")
            status = nojs.submit(nojs.link("v1"))
            check(status == 200 and nojs.path() == pkg + "/v1", f"v1 without JavaScript: {nojs.driver.current_url} ({status})")
            hidden = [e for e in nojs.all("button.copy") if e.is_displayed()]
            check(not hidden, "copy buttons shown, so JavaScript ran in the no-JavaScript browser")
            check(st["images"]["demo"]["layers"][0]["digest"] in nojs.text(), "layer digest missing without JavaScript")
            nojs.shot("version-v1")
            status = nojs.submit(nojs.one("header form[action='/user/logout'] button"))
            check(status == 200 and "Sign in" in nojs.one("header nav").text, "sign-out without JavaScript failed")

        run.step("without JavaScript: sign in, versions page, version page, sign out", nojs_flow)

        def csp():
            for br in run.browsers:
                br.drain()
            bad = [(br.name, url, lvl, msg) for br in run.browsers for (url, lvl, msg) in br.console
                   if "content security policy" in msg.lower() or "content-security-policy" in msg.lower()]
            with open(os.path.join(args.out, "console.log"), "w") as f:
                for br in run.browsers:
                    for url, lvl, msg in br.console:
                        f.write(f"{br.name}\t{lvl}\t{url}\t{msg}\n")
            check(not bad, "CSP violations in the console: " + "; ".join(f"[{n}] {u}: {m}" for n, u, _, m in bad))
            severe = [(br.name, u, m) for br in run.browsers for (u, lvl, m) in br.console
                      if lvl == "SEVERE" and "status of 404" not in m and "status of 401" not in m]
            if severe:
                print("     note: other console errors (see console.log): " +
                      "; ".join(f"[{n}] {u}: {m}" for n, u, m in severe[:5]))

        run.current = b

        def canary():
            # The console check below must be able to see a violation: an
            # inline script injected into a Berth page is refused by its CSP.
            b.get("/")
            b.driver.execute_script(
                "var s = document.createElement('script'); s.textContent = 'window.berthCanary = 1;';"
                "document.body.appendChild(s);")
            time.sleep(0.3)
            before = len(b.console)
            b.drain()
            seen = [m for (_, _, m) in b.console[before:] if "content security policy" in m.lower()]
            check(seen, "an injected inline script produced no CSP message in the console; "
                        f"console capture is not working (got {b.console[before:]})")
            check(not b.driver.execute_script("return window.berthCanary === 1"),
                  "an injected inline script ran: the page has no working CSP")
            del b.console[before:]

        run.step("an injected inline script is refused by the CSP and seen in the console (canary)", canary)
        run.step("no Content Security Policy violation in the console", csp)
    finally:
        for br in run.browsers:
            try:
                br.quit()
            except Exception:
                pass
        subprocess.run(["rm", "-rf", work])

    print(f"{run.passed} browser steps passed in {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
