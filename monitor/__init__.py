"""castwatch's product side: the daemon, the rights database, operations. Imports ``fingerprint``."""
