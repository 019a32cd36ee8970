"""`gamma-edge serve`: exported models behind the Open Inference Protocol (KServe v2 / Triton REST),
with dynamic batching, a plain POST /score and Prometheus metrics; and the same app as a Ray Serve
deployment. Needs the serve extra (starlette, uvicorn, python-multipart, prometheus-client)."""
