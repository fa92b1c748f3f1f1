"""A local emulator of the Google Cloud APIs that the gce_* roles call.

It listens on 127.0.0.1 only, as an HTTPS CONNECT proxy: the google.cloud modules and the
gcp_compute inventory plugin (through requests, HTTPS_PROXY and REQUESTS_CA_BUNDLE) and
ansible.builtin.uri (through https_proxy and ca_path) connect to it unmodified; it terminates TLS
with a test CA for the Google API host names it serves and answers from memory. CONNECT to any
other host is refused: nothing leaves the machine.

What it implements is what the roles call (docs/gce.md lists it): resources are created, changed
and deleted by long-running operations that complete after --op-delay seconds (a client that
does not wait sees the old state, as on Google Cloud); inserts check required fields, name
syntax, references and conflicts, and errors come back in Google's shapes.

Run it with `PYTHONPATH=emulator python -m gce_emulator --state-dir DIR --project P --token T`:
it writes DIR/ca.pem and DIR/port (the proxy's port) and ends by itself after --max-seconds.
Plain-HTTP admin endpoints under /_emulator/ (state, call log, seed, settings, a Patroni stand-in)
serve the tests.

Modules, one per API area: core (state, operations, errors, field checks), compute (the Compute
REST surface), instances, networks (VPC and load balancing), firewall, iam, secrets, storage,
server (proxy, TLS, dispatch, admin endpoints, the process).
"""
