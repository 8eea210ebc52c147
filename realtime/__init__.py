"""procreche's core: settings, channels, wire protocol, permissions, bus, store.

Nothing in this package imports a web framework: the gateway and the workers compose it.
"""
