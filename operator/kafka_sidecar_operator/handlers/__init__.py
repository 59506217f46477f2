"""kopf handlers: thin adapters that unpack bodies, call the pure modules and write results."""
