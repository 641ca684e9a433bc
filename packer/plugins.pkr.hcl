# Plugins for Packer 1.7 and newer (`packer init packer/`). Packer 1.6.x has these
# builders built in and rejects this block, so goldenimage leaves this file out there.
packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
  }
}
