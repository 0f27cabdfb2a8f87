from asyncapy.testing import TestClient
from examples.notes import server

KEY = "key-for-the-tutorial"


def test_put_then_get() -> None:
    with TestClient(server) as client:
        stored = client.request({"kind": "put", "key": "tea", "text": "green", "api_key": KEY})
        assert stored == {"kind": "stored", "key": "tea"}
        assert client.request({"kind": "get", "key": "tea"}) == {"kind": "note", "key": "tea", "text": "green"}
        assert client.request({"kind": "list"}) == {"kind": "keys", "keys": ["tea"]}


def test_errors() -> None:
    with TestClient(server) as client:
        missing = client.request({"kind": "get", "key": "cake"})
        assert missing == {"status": "failure", "error": "ERR_NOT_FOUND", "detail": "no note 'cake'"}
        no_key = client.request({"kind": "put", "key": "tea", "text": "green"})
        assert no_key["error"] == "ERR_NO_HANDLER"  # the ApiKey filter refused it
        bad_key = client.request({"kind": "get", "key": "Tea!"})
        assert bad_key["errors"][0]["loc"] == ["key"]  # the pattern of Key
