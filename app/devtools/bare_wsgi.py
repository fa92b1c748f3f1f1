"""The smallest WSGI app: `bench.py` runs it under the API's gunicorn settings to measure what
gunicorn alone costs per request (no Flask, no hooks, no database), i.e. the floor under any
app served by gunicorn on this machine."""

BODY = b'{"status":"ok"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
