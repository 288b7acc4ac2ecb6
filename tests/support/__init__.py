"""Test helpers: local servers, fault proxies, worker processes (spawned children import these
modules by name), peer-suite plugins and the namespace helpers the fixtures use."""
