"""What the web UI needs from `vigil serve` besides the device API: the UI
itself from the binary, the broker view with connected clients, the settings
(webhook tokens cut), messages since an id, and the readings of each message."""

from __future__ import annotations

import json

from helpers import unique
from test_presence_alerts import write_config


def test_the_ui_is_served_from_the_binary(vigil):
    r = vigil.http("GET", "/")
    assert r.status == 200 and "text/html" in r.headers.get("content-type", "")
    page = r.body.decode()
    assert 'id="app"' in page, "the binary was built without ui/dist: run `make ui` before cargo build"
    # Every asset the page names is served, with a type and for good (Vite hashes the names).
    assets = [part.split('"')[0] for part in page.split('/assets/')[1:]]
    assert assets, page
    for name in assets:
        a = vigil.http("GET", f"/assets/{name}")
        assert a.status == 200 and len(a.body) > 0, name
        assert a.headers.get("content-type", "").startswith(("text/javascript", "text/css")), a.headers
        assert "immutable" in a.headers.get("cache-control", "")
    # The app routes with the URL fragment; any other path still gets the page.
    assert vigil.http("GET", "/devices/whatever").body == r.body
    assert vigil.http("GET", "/assets/nope.js").status == 404
    # Unknown API paths stay JSON errors, not the page.
    miss = vigil.http("GET", "/api/nope")
    assert miss.status == 404 and "error" in miss.json()


def test_broker_view_lists_listeners_and_connected_clients(vigil):
    device = unique("brk")
    c = vigil.client(client_id=f"{device}-client")
    c.publish_wait(f"{device}/t", b"1", qos=1)
    vigil.wait_stored(f"{device}/t", 1)
    view = vigil.http_get_json("/api/broker")
    protocols = {l["protocol"]: l for l in view["listeners"]}
    assert protocols["mqtt"]["address"] == vigil.ready["mqtt"]
    assert protocols["ws"]["address"] == vigil.ready["ws"] and protocols["ws"]["path"] == "/mqtt"
    assert protocols["mqtts"]["address"] == vigil.ready["tls"] and protocols["mqtts"]["tls"]
    assert protocols["wss"]["address"] == vigil.ready["wss"] and protocols["wss"]["path"] == "/mqtt"
    assert protocols["mqtts"]["client_certificates"] == "optional"
    assert not protocols["mqtt"]["tls"] and not protocols["ws"]["tls"]
    assert all(l["loopback_only"] for l in view["listeners"])
    assert view["refused_publishes"] == 0 and view["refused_subscriptions"] == 0
    [me] = [x for x in view["clients"] if x["client_id"] == f"{device}-client"]
    assert me["device"] == device and me["transport"] == "tcp" and me["peer"].startswith("127.0.0.1:")
    c.disconnect()
    vigil.wait_for(lambda: all(x["client_id"] != f"{device}-client"
                               for x in vigil.http_get_json("/api/broker")["clients"]), 10,
                   what="the client to leave the list")


def test_settings_are_readable_and_cut_webhook_tokens(vigil_factory, tmp_path):
    v = vigil_factory(write_config(
        tmp_path, '[store]\nretention_days = 7\n[alerts]\nwebhooks = ["http://user:pw@127.0.0.1:9/hook?token=s3cret"]\n'))
    settings = v.http_get_json("/api/settings")
    assert settings["store"]["retention_days"] == 7
    text = json.dumps(settings)
    assert "s3cret" not in text and "pw@" not in text, text
    assert settings["alerts"]["webhooks"] == ["http://127.0.0.1:9/…"]


def test_messages_after_an_id_and_their_readings(vigil):
    device = unique("after")
    c = vigil.client()
    c.publish_wait(f"{device}/a", json.dumps({"t": 21.5, "rh": 40}), qos=1)
    vigil.wait_stored(f"{device}/a", 1)
    [first] = vigil.messages(device=device)
    assert sorted((m["name"], m["value"]) for m in first["metrics"]) == [("rh", 40.0), ("t", 21.5)]
    for i in range(3):
        c.publish_wait(f"{device}/b", str(i), qos=1)
    vigil.wait_stored(f"{device}/b", 3)
    since = vigil.messages(device=device, after=first["id"])
    assert [m["payload_text"] for m in since] == ["2", "1", "0"], "newest first, only those after"
    assert vigil.messages(device=device, after=since[0]["id"]) == []


def test_certificates_are_issued_listed_and_revoked_through_the_api(vigil, tmp_path):
    import subprocess
    view = vigil.http_get_json("/api/certs")
    kinds = [c["kind"] for c in view["certificates"]]
    assert kinds[:2] == ["ca", "server"], kinds  # the CA is made at first start, the server certificate with it
    assert "BEGIN CERTIFICATE" in view["ca_pem"] and "PRIVATE" not in json.dumps(view)
    server = view["certificates"][1]
    assert {"localhost", "127.0.0.1", "::1"} <= set(server["names"]), server

    issued = vigil.http_post_json("/api/certs", {"device": "ward3/oximeter2"}, expect=201)
    assert issued["certificate"]["name"] == "ward3/oximeter2" and not issued["certificate"]["revoked"]
    assert len(issued["certificate"]["sha256"].split(":")) == 32
    (tmp_path / "ca.pem").write_text(issued["ca_pem"])
    (tmp_path / "dev.pem").write_text(issued["cert_pem"])
    v = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp_path / "ca.pem"),
                        str(tmp_path / "dev.pem")], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "PRIVATE KEY" in issued["key_pem"]
    assert issued["key_pem"] not in vigil.stderr(), "the key is never logged"

    listed = {c["name"]: c for c in vigil.http_get_json("/api/certs")["certificates"]}
    assert listed["ward3/oximeter2"]["serial"] == issued["certificate"]["serial"]
    revoked = vigil.http_post_json("/api/certs/revoke", {"device": "ward3/oximeter2"})
    assert revoked["revoked"] is True
    assert {c["name"]: c for c in vigil.http_get_json("/api/certs")["certificates"]}["ward3/oximeter2"]["revoked"]

    nobody = vigil.http("POST", "/api/certs/revoke", {"device": "nobody"})
    assert nobody.status == 404 and "no certificate for device 'nobody'" in nobody.json()["error"]
    bad = vigil.http("POST", "/api/certs", {"device": ""})
    assert bad.status == 400 and "device id" in bad.json()["error"], bad.body
    assert vigil.http("POST", "/api/certs", {"name": "x"}).status == 400
