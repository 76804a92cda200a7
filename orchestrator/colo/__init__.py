"""Colocated clusters: Ray on the user's own hosts, reached over SSH (`lathe cluster up|status|down`).

`inventory` (the YAML that lists the hosts), `nodes` (an SSH connection to a host and its facts),
`node_env` (a bare box's venv with lathe[node], from a wheelhouse or an index),
`preflight` (every check before any change), `services` (what runs on each host, under systemd
or the supervisor script: one interface) and `provision` (up, status, down; the profile it writes).
May import: `profiles`, `store`, `errors`, `remote.connect` (to ask Ray which nodes joined).
"""
