"""The Getting-started test client: sends ``{"test": 1}`` and prints the raw reply."""

import sys

from asyncapy import defaultclient

port = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
client = defaultclient.Client("127.0.0.1", port, tls=False)
enc = "json"
client.connect()
client.send({"test": 1}, encoding=enc)
response = client.receive_all()
print(response)
client.close()
