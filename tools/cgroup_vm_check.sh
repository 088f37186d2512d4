#!/bin/sh
# Checks what the e2e tests cannot where cgroup v2 lacks the memory and cpu controllers (a
# hybrid hierarchy, as on the project's machines): boots Debian's kernel in QEMU (software
# emulation, a few minutes), with this machine's / shared read-only over 9p and a pure cgroup v2
# mounted, and runs tools/cgroup_vm_check.py there as root against this tree and its venv.
#   sh tools/cgroup_vm_check.sh [VENV]     (VENV: the venv with jobctl installed; default .venv)
# Needs root (apt-get install qemu-system-x86; apt-get download of linux-image-amd64 and
# busybox-static, unpacked into a scratch directory, not installed).
set -eu
TREE=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "${1:-$TREE/.venv}" && pwd)
WORK=$(mktemp -d /var/tmp/jobctl-vm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
command -v qemu-system-x86_64 >/dev/null || apt-get install -y -q qemu-system-x86 >/dev/null
cd "$WORK"
KERNEL_PACKAGE=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: //p' | head -1)
apt-get download -q "$KERNEL_PACKAGE" busybox-static >/dev/null 2>&1
for deb in ./*.deb; do dpkg -x "$deb" root; done
KVER=$(ls root/lib/modules)
mkdir -p initrd/bin initrd/mods initrd/mnt initrd/proc initrd/dev
cp root/bin/busybox initrd/bin/
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
for m in $MODULES; do cp "$(find root/lib/modules/"$KVER" -name "$m.ko")" initrd/mods/; done
cat > initrd/init <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $MODULES; do /bin/busybox insmod /mods/\$m.ko; done
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostroot /mnt
/bin/busybox mount -t proc proc /mnt/proc
/bin/busybox mount -t sysfs sys /mnt/sys
/bin/busybox mount -t tmpfs tmp /mnt/sys/fs/cgroup
/bin/busybox mount -t cgroup2 cgroup2 /mnt/sys/fs/cgroup
/bin/busybox mount -t devtmpfs dev /mnt/dev
/bin/busybox mount -t tmpfs tmp /mnt/tmp
/bin/busybox chroot /mnt /bin/sh -c 'cd $TREE && PATH=$VENV/bin:/usr/bin:/bin HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=$TREE $VENV/bin/python tools/cgroup_vm_check.py; echo "VM-EXIT \$?"'
/bin/busybox poweroff -f
INIT
chmod +x initrd/init
(cd initrd && find . | ../root/bin/busybox cpio -o -H newc 2>/dev/null | gzip) > initrd.gz
timeout 900 qemu-system-x86_64 -m 3G -smp 2 -nographic -no-reboot \
    -kernel "root/boot/vmlinuz-$KVER" -initrd initrd.gz -append "console=ttyS0 panic=-1 quiet" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on \
    > console.log 2>&1 || true
grep -E '^(ok|FAILED) ' console.log || true
grep -q '^VM-EXIT 0' console.log
