"""ProFL ClientApp package."""
