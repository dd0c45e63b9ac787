"""Where images come from: one `Source` interface (`base`), the registry that picks the
provider for a link (`registry`), and one package per provider, all listed in `all`."""
