"""What the node's verified downlink commands do (the intake and verification live in `gateway.remote`)."""
