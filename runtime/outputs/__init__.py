"""Where the fleet's events and figures go beyond the JSON lines: mqtt (events and retained camera
states to a broker, paho-mqtt), webhook (each event POSTed from a thread of its own) and prometheus
(an endpoint whose per-camera figures are read from the fleet at scrape time, prometheus-client).
None of them may stop or slow the scoring. They may import only contract and their own client
library (paho-mqtt and prometheus-client, the `fleet` install extra; the webhook needs only the
standard library), never another runtime wing: the fleet calls them, they call nothing back."""
