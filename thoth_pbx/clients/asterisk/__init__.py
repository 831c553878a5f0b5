"""Asterisk: AMI and ARI clients with reconnect."""
