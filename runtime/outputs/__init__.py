"""Where a run's records, events and states go, each output behind one small interface (base:
publish_event, publish_state, close, and the dispatcher that fans out to them): jsonl (the JSON
lines, appended and rotated by size), log (events on stderr), snapshots (a JPEG per event), mqtt
(events, retained states and resets over a broker, paho-mqtt; broker: its address, user, password and
TLS), homeassistant (discovery of every camera over the same broker), webhook (each event POSTed
from a thread of its own), prometheus (an endpoint read at scrape time, prometheus-client) and web (the
live page, aiohttp: web.py the output, web_server.py its server, listen.py its address, page/ its HTML,
JS and CSS). None of them may stop or slow the scoring. They import only contract and their own client library, never
another runtime wing: the runs call them, they call nothing back."""
