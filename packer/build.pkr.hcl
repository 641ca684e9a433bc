# One build for every target: the image's playbook, run once at build time, then a
# manifest that goldenimage reads the artifact from (never scraped from output).

build {
  sources = ["source.qemu.local", "source.amazon-ebs.aws"]

  # The build machine (VM or instance) runs cloud-init while SSH already answers, and
  # cloud-init may restart sshd under Ansible's feet ("kex_exchange_identification:
  # Connection reset" on the first task, seen with both sources): let it finish first.
  # A degraded status is not a build failure; the image suite checks cloud-init. (A direct
  # kernel boot disabled cloud-init: no need to start it just to hear so.)
  # Then the guest's own account of its boot (systemd-analyze, once the boot has finished:
  # goldenimage.timing.BOOT_ANALYSIS) goes to the image's timings. Where the build VM was
  # started from the disk's own kernel and initrd (local target), they are checked to be the
  # files on the booted disk: `boot_check` lists "<sha256>:<path>".
  provisioner "shell" {
    environment_vars = ["GI_BOOT_CHECK=${var.boot_check}"]
    inline = [
      "grep -qw cloud-init=disabled /proc/cmdline || cloud-init status --wait >/dev/null || true",
      "sudo sh -c 'timeout 120 systemctl is-system-running --wait >/dev/null 2>&1; systemd-analyze time; echo @@chain; systemd-analyze critical-chain ssh.service; echo @@blame; systemd-analyze blame' > /dev/shm/goldenimage-boot.txt 2>&1 || true",
      "[ -z \"$GI_BOOT_CHECK\" ] || for e in $GI_BOOT_CHECK; do echo \"$${e%%:*}  $${e#*:}\"; done | sha256sum --check --strict --quiet -",
    ]
  }

  provisioner "file" {
    direction   = "download"
    source      = "/dev/shm/goldenimage-boot.txt"
    destination = var.boot_analysis_file
  }

  # A local child starts from its parent's package index, as the parent's build left it
  # (lists, source package cache, times), handed over on a read-only virtual disk: its apt
  # tasks skip the update within their cache_valid_time. Hygiene empties the index again.
  provisioner "shell" {
    only   = ["qemu.local"]
    inline = ["d=/dev/disk/by-id/virtio-gi-apt-in; if [ -e $d ]; then sudo tar -C / -xf $d; fi"]
  }

  provisioner "ansible" {
    playbook_file       = var.playbook
    user                = var.ssh_username
    use_proxy           = false
    inventory_directory = var.inventory_directory
    groups              = var.groups
    extra_arguments     = ["--extra-vars", "@${var.extra_vars_file}"]
    ansible_env_vars = [
      "ANSIBLE_ROLES_PATH=${var.roles_path}",
      "ANSIBLE_COLLECTIONS_PATH=${var.collections_path}",
      "ANSIBLE_HOST_KEY_CHECKING=False",
      "ANSIBLE_NOCOLOR=1",
      "ANSIBLE_RETRY_FILES_ENABLED=False",
      "ANSIBLE_PIPELINING=True",
      "ANSIBLE_SSH_ARGS=-o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=/dev/null",
    ]
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      image_id    = var.image_id
      image_name  = var.image_name
      fingerprint = var.fingerprint
    }
  }
}
