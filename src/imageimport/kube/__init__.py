"""Kubernetes client helpers the API and the operator share: where the ImageImport resource
lives, a client for this process's cluster, and reading Secrets."""
