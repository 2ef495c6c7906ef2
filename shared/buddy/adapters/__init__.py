"""The only modules that import Google Cloud and Firebase SDKs."""
