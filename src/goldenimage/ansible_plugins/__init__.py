"""Ansible plugins the bake loads into Packer's Ansible provisioner (not imported by the library)."""
