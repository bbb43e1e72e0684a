"""The pure core: manifests, the object model, selectors, IPAM and names. Needs no root."""
