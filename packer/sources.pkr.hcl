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
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  cpus             = var.cpus
  memory           = var.memory
  headless         = true
  vnc_bind_address = "127.0.0.1"
  cd_files         = var.seed_files
  cd_label         = "cidata"
  qemuargs         = [["-serial", "file:${var.serial_log}"]]

  communicator         = "ssh"
  ssh_host             = "127.0.0.1"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = var.ssh_timeout
  shutdown_command     = "sudo shutdown -P now"
  shutdown_timeout     = "5m"
}

source "amazon-ebs" "aws" {
  region        = var.aws_region
  source_ami    = var.aws_source_ami
  instance_type = var.aws_instance_type
  subnet_id     = var.aws_subnet_id
  ssh_username  = var.ssh_username
  ami_name      = var.image_id
  ami_regions   = var.aws_ami_regions
  ami_users     = var.aws_ami_users
  encrypt_boot  = true
  kms_key_id    = var.aws_kms_key_id

  temporary_security_group_source_cidrs = var.aws_ssh_cidrs

  tags          = var.tags
  snapshot_tags = var.tags
  run_tags      = { "goldenimage:build" = var.image_id }
}
