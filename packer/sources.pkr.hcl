# Two sources share one build block (build.pkr.hcl): the local qcow2 and the AWS AMI.

source "qemu" "local" {
  disk_image       = true
  iso_url          = var.base_image
  iso_checksum     = var.base_image_checksum
  output_directory = var.output_directory
  vm_name          = "disk.qcow2"
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  disk_compression = true
  qemu_img_args {
    convert = var.disk_convert_args
  }
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  cpus             = var.cpus
  memory           = var.memory
  headless         = true
  boot_wait        = "1s" # nothing to type; Packer reads "0s" as its default 10s
  vnc_bind_address = "127.0.0.1"
  cd_files         = var.seed_files
  cd_label         = "cidata"
  qemuargs         = concat([["-serial", "file:${var.serial_log}"]], var.extra_qemuargs)

  communicator         = "ssh"
  ssh_host             = "127.0.0.1"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = var.ssh_timeout
  shutdown_command     = var.shutdown_command
  shutdown_timeout     = "5m"
}

# The AMI build. The runner resolves the base AMI with boto3 before the build (the
# fingerprint holds its id) and passes every aws_* value; see goldenimage/aws/ami.py.
source "amazon-ebs" "aws" {
  region              = var.aws_region
  profile             = var.aws_profile
  custom_endpoint_ec2 = var.aws_endpoint_ec2
  source_ami          = var.aws_source_ami
  instance_type       = var.aws_instance_type
  subnet_id           = var.aws_subnet_id
  ami_name            = var.aws_ami_name
  ami_description     = "goldenimage ${var.image_name} ${var.image_id} fingerprint ${var.fingerprint}"
  ami_regions         = var.aws_ami_regions
  ami_users           = var.aws_ami_users
  encrypt_boot        = var.aws_encrypt_boot
  kms_key_id          = var.aws_kms_key_id
  region_kms_key_ids  = var.aws_region_kms_key_ids

  launch_block_device_mappings {
    device_name           = var.aws_root_device_name
    volume_size           = var.aws_volume_size
    volume_type           = "gp3"
    iops                  = 3000 # gp3 baseline
    throughput            = 125
    delete_on_termination = true
  }

  # Only the runner's address may reach the build instance.
  temporary_security_group_source_cidrs = var.aws_ssh_cidrs

  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_interface        = var.aws_ssh_interface
  ssh_host             = var.aws_ssh_host
  ssh_port             = var.aws_ssh_port
  ssh_private_key_file = var.aws_ssh_private_key_file
  ssh_timeout          = var.ssh_timeout

  tags            = var.tags
  snapshot_tags   = var.tags
  run_tags        = { "goldenimage:build" = var.image_id, "Name" = "goldenimage build ${var.image_id}" }
  run_volume_tags = { "goldenimage:build" = var.image_id }

  # packer >= 1.7 only: the runner leaves these lines out for older Packer, which has no
  # metadata_options (1.6.6 rejects the block). IMDSv2 on the build instance and on every
  # instance launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"
  # end packer >= 1.7
}
