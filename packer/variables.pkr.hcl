# Inputs of every build. (Validation uses no regex functions: Packer 1.6 lacks them there.)
# goldenimage writes them to a var file per bake; the same file
# can be passed to a plain `packer build` to reproduce a bake by hand.

variable "image_name" {
  type        = string
  description = "Name of the image (a key of `images:` in the environment's settings)."
  validation {
    condition     = length(var.image_name) > 0 && length(var.image_name) <= 63 && lower(var.image_name) == var.image_name && length(split(" ", var.image_name)) == 1
    error_message = "The image_name must be lowercase, without spaces, at most 63 characters."
  }
}

variable "image_id" {
  type        = string
  description = "Id the image will carry in the registry."
  validation {
    condition     = length(var.image_id) > 0
    error_message = "The image_id must not be empty."
  }
}

variable "fingerprint" {
  type        = string
  description = "SHA-256 over every input that shapes the image."
  validation {
    condition     = length(var.fingerprint) == 64 && lower(var.fingerprint) == var.fingerprint
    error_message = "The fingerprint must be 64 lowercase hex digits."
  }
}

variable "playbook" {
  type        = string
  description = "Absolute path of the image's playbook."
}

variable "inventory_directory" {
  type        = string
  description = "Directory of the environment's inventory (hosts file and group_vars)."
}

variable "groups" {
  type        = list(string)
  description = "Inventory groups the build host joins."
  default     = []
}

variable "extra_vars_file" {
  type        = string
  description = "JSON file of extra vars (image name, fingerprint, build time) for the playbook."
}

variable "roles_path" {
  type        = string
  description = "ANSIBLE_ROLES_PATH for the playbook."
}

variable "collections_path" {
  type        = string
  default     = "~/.ansible/collections:/usr/share/ansible/collections"
  description = "ANSIBLE_COLLECTIONS_PATH for the playbook (the project's installed requirements first)."
}

variable "manifest_path" {
  type        = string
  description = "Where the manifest post-processor writes its JSON."
}

variable "ssh_username" {
  type        = string
  description = "User the build connects as (local: created by the NoCloud seed; aws: the AMI's default user)."
  default     = "gi"
}

variable "boot_analysis_file" {
  type        = string
  description = "Where the build VM's own account of its boot (systemd-analyze) is downloaded to."
  default     = "boot-analysis.txt"
}

variable "boot_check" {
  type        = string
  description = "Space-separated <sha256>:<path> of the kernel and initrd the build VM was started with (direct kernel boot), checked on the booted disk; empty: nothing to check."
  default     = ""
}

# --- local target (qemu) -----------------------------------------------------------------

variable "base_image" {
  type        = string
  description = "Path or URL of the base qcow2."
  default     = ""
}

variable "base_image_checksum" {
  type        = string
  description = "Checksum of the base image, as sha256:<hex>."
  default     = "none"
  validation {
    condition     = var.base_image_checksum == "none" || (substr(var.base_image_checksum, 0, 7) == "sha256:" && length(var.base_image_checksum) == 71)
    error_message = "The base_image_checksum must be sha256:<64 hex digits>."
  }
}

variable "output_directory" {
  type        = string
  description = "Directory (must not exist) that receives the built qcow2."
  default     = "output"
}

variable "disk_size" {
  type        = string
  description = "Size of the image's disk, e.g. 4G."
  default     = "4G"
  validation {
    condition     = contains(["M", "G"], substr(var.disk_size, length(var.disk_size) - 1, 1)) && length(var.disk_size) >= 2
    error_message = "The disk_size must be a size such as 4G or 4096M."
  }
}

variable "accelerator" {
  type        = string
  description = "QEMU accelerator: kvm where a probe boot succeeds, else tcg."
  default     = "tcg"
  validation {
    condition     = contains(["kvm", "tcg"], var.accelerator)
    error_message = "The accelerator must be kvm or tcg."
  }
}

variable "cpus" {
  type    = number
  default = 2
  validation {
    condition     = var.cpus >= 1
    error_message = "The cpus must be at least 1."
  }
}

variable "memory" {
  type        = number
  description = "MiB"
  default     = 1024
  validation {
    condition     = var.memory >= 256
    error_message = "The memory must be at least 256 MiB."
  }
}

variable "ssh_private_key_file" {
  type        = string
  description = "Private half of the ephemeral build key (local target)."
  default     = ""
}

variable "seed_files" {
  type        = list(string)
  description = "NoCloud seed files (user-data, meta-data) put on a CD labelled cidata."
  default     = []
}

variable "ssh_timeout" {
  type    = string
  default = "10m"
}

variable "serial_log" {
  type        = string
  description = "File that receives the build VM's serial console."
  default     = "serial.log"
}

variable "shutdown_command" {
  type        = string
  description = "How the build VM stops; a direct kernel boot also removes the build user and its sudo rule here, after the last provisioner."
  default     = "sudo shutdown -P now"
}

variable "extra_qemuargs" {
  type        = list(list(string))
  description = "More QEMU arguments for the build VM: the runner attaches the package index disks (a parent's, read-only; one for this image's children) this way."
  default     = []
}

variable "disk_convert_args" {
  type        = list(string)
  description = "Extra qemu-img convert arguments for the final, compressed disk (the runner picks zstd where QEMU has it)."
  default     = []
}

# --- aws target (amazon-ebs) ---------------------------------------------------------------

variable "aws_region" {
  type    = string
  default = "us-east-1"
  validation {
    condition     = length(split("-", var.aws_region)) >= 3 && lower(var.aws_region) == var.aws_region
    error_message = "The aws_region must look like eu-west-1."
  }
}

variable "aws_profile" {
  type        = string
  description = "Named AWS profile; empty: the SDK's own resolution (environment, SSO, role)."
  default     = ""
}

variable "aws_endpoint_ec2" {
  type        = string
  description = "EC2 endpoint override (AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL); empty: AWS's."
  default     = ""
}

variable "aws_source_ami" {
  type        = string
  description = "Base AMI id, resolved by goldenimage with boto3 before the build."
  default     = "ami-00000000"
  validation {
    condition     = substr(var.aws_source_ami, 0, 4) == "ami-" && length(var.aws_source_ami) >= 12
    error_message = "The aws_source_ami must be an AMI id (ami-...)."
  }
}

variable "aws_root_device_name" {
  type        = string
  description = "Root device of the base AMI (from its description)."
  default     = "/dev/xvda"
  validation {
    condition     = substr(var.aws_root_device_name, 0, 5) == "/dev/"
    error_message = "The aws_root_device_name must be a device path such as /dev/xvda."
  }
}

variable "aws_instance_type" {
  type    = string
  default = "t3.small"
}

variable "aws_subnet_id" {
  type    = string
  default = ""
}

variable "aws_ami_name" {
  type        = string
  description = "Name of the AMI: unique per image and fingerprint."
  default     = "goldenimage-check"
  validation {
    condition     = length(var.aws_ami_name) >= 3 && length(var.aws_ami_name) <= 128
    error_message = "The aws_ami_name must be 3 to 128 characters long."
  }
}

variable "aws_volume_size" {
  type        = number
  description = "Root volume size in GiB."
  default     = 8
  validation {
    condition     = var.aws_volume_size >= 1 && var.aws_volume_size <= 16384
    error_message = "The aws_volume_size must be between 1 and 16384 GiB."
  }
}

variable "aws_encrypt_boot" {
  type    = bool
  default = true
}

variable "aws_kms_key_id" {
  type        = string
  description = "KMS key for EBS encryption; empty means the account's default EBS key."
  default     = ""
}

variable "aws_region_kms_key_ids" {
  type        = map(string)
  description = "KMS key per copy region (needed with a custom key and ami_regions)."
  default     = {}
}

variable "aws_ami_regions" {
  type    = list(string)
  default = []
}

variable "aws_ami_users" {
  type    = list(string)
  default = []
}

variable "aws_ssh_cidrs" {
  type        = list(string)
  description = "CIDRs the temporary security group admits: the runner's own address."
  default     = ["127.0.0.1/32"]
}

variable "aws_ssh_interface" {
  type        = string
  description = "How to reach the build instance (public_ip, private_ip, ...); empty: Packer's default."
  default     = ""
}

variable "aws_ssh_host" {
  type        = string
  description = "Reach the build instance at this address instead (a tunnel); empty: its IP."
  default     = ""
}

variable "aws_ssh_port" {
  type        = number
  description = "SSH port of aws_ssh_host; 0: 22."
  default     = 0
}

variable "aws_ssh_private_key_file" {
  type        = string
  description = "A key already on the instance; empty: Packer makes a temporary key pair."
  default     = ""
}

variable "tags" {
  type        = map(string)
  description = "Tags for the AMI and its snapshots (goldenimage:* provenance)."
  default     = {}
}
