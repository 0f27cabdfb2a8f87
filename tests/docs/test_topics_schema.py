"""Topics in ``server.asyncapi()`` (channels the server sends on) and on the docs page."""

from __future__ import annotations

from pathlib import Path

from tests.servers.ticker import server

from ..asyncapi_validation import json_schema_errors, parse_with_official_parser, require_parser
from .test_docs_page import EXTERNAL, rendered_text, write_page

DOC = server.asyncapi(title="Ticker", version="1.0.0")


def test_topics_are_channels_the_server_sends_on() -> None:
    assert set(DOC["channels"]) == {"connection", "topic_prices", "topic_market_trades"}
    channel = DOC["channels"]["topic_market_trades"]
    assert channel["address"] == "market.trades"
    operation = DOC["operations"]["topic_market_trades"]
    assert operation["action"] == "send" and operation["channel"] == {"$ref": "#/channels/topic_market_trades"}
    assert operation["x-asyncapy-topic"] == "market.trades" and operation["x-asyncapy-max-buffered"] == 50
    event = DOC["components"]["messages"]["topic_market_trades.event"]["payload"]
    assert event == {"$ref": "#/components/schemas/Trade"}
    schemas = DOC["components"]["schemas"]
    assert schemas["Trade"]["properties"]["last"] == {"$ref": "#/components/schemas/Tick"}
    assert schemas["Tick"]["properties"]["symbol"]["description"] == "The ticker symbol"  # one Tick, shared with the route
    assert "ERR_SLOW_CONSUMER" in DOC["components"]["messages"]["error"]["payload"]["properties"]["error"]["enum"]


def test_a_document_with_topics_is_valid(tmp_path: Path) -> None:
    assert json_schema_errors(DOC) == []
    require_parser()
    result = parse_with_official_parser({"ticker": DOC}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_docs_page_lists_the_topics(tmp_path: Path) -> None:
    page = write_page("tests.servers.ticker:server", tmp_path / "api.html")
    assert "<section id=\"topics\">" in page and "<h3>Topics</h3>" in page  # a section and its place in the nav
    assert EXTERNAL.search(page) is None
    read = rendered_text(page, tmp_path)
    prices = read["operations"]["op-topic_prices"]
    assert "prices" in prices and "max_buffered 1000" in prices and "example event" in prices, prices
    assert '"symbol"' in prices and '"price"' in prices  # the example event is a Tick
    trades = read["operations"]["op-topic_market_trades"]
    assert "market.trades" in trades and "max_buffered 50" in trades and '"qty"' in trades, trades
    assert "quote" in read["operations"]["op-quote"]  # the handlers are still there
    assert "ERR_SLOW_CONSUMER" in read["errors"]


def test_server_schema_lists_the_topics_with_their_event_schema() -> None:
    schema = server.schema()
    topics = {topic["name"]: topic for topic in schema["topics"]}
    assert set(topics) == {"prices", "market.trades"}
    assert topics["market.trades"]["event"] == {"$ref": "#/$defs/Trade"} and topics["market.trades"]["max_buffered"] == 50
    assert schema["$defs"]["Trade"]["properties"]["last"] == {"$ref": "#/$defs/Tick"}  # shared with the routes' Tick
