#!/bin/sh
# Prepares a catalog base image for Kiln builds: installs git, sudo and what
# the runner needs, creates the `build` user with passwordless sudo, and sets
# up the package manager. Runs as root during `docker build`, with the
# package-manager family as its only argument.
set -eu

manager="${1:?usage: setup-image.sh apk|apt|dnf|pacman|nix}"
build_home=/home/build

install_sudoers() {
	mkdir -p /etc/sudoers.d
	printf 'build ALL=(ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/build
	chmod 0440 /etc/sudoers.d/build
}

case "$manager" in
apk)
	# libstdc++ and libgcc are the libraries that the musl build of node links against.
	apk add --no-cache bash ca-certificates curl git gzip libgcc libstdc++ openssh-client runuser sudo tar xz
	adduser -D -h "$build_home" -s /bin/bash build
	install_sudoers
	;;
apt)
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	# gnupg and dirmngr fetch the keys of apt repositories that manifests add.
	apt-get install -y --no-install-recommends bash ca-certificates curl dirmngr git gnupg gzip openssh-client sudo tar xz-utils
	rm -rf /var/lib/apt/lists/*
	useradd --create-home --home-dir "$build_home" --shell /bin/bash build
	install_sudoers
	;;
dnf)
	# --allowerasing lets curl replace curl-minimal, which Fedora and Rocky Linux ship.
	dnf -y install --allowerasing bash ca-certificates curl git gzip libstdc++ openssh-clients shadow-utils sudo tar util-linux xz
	dnf clean all
	useradd --create-home --home-dir "$build_home" --shell /bin/bash build
	install_sudoers
	;;
pacman)
	pacman-key --init
	pacman-key --populate archlinux
	pacman -Syu --noconfirm --needed bash ca-certificates curl git gzip openssh sudo tar util-linux xz
	pacman -Scc --noconfirm
	useradd --create-home --home-dir "$build_home" --shell /bin/bash build
	install_sudoers
	;;
nix)
	# The runner's Node.js, sudo, runuser and useradd come from nixpkgs into a
	# profile of their own, outside the build user's PATH.
	nix-channel --update
	nix-env --profile /opt/kiln/nix-profile -iA nixpkgs.nodejs_22 nixpkgs.sudo nixpkgs.shadow nixpkgs.util-linux
	ln -sf /opt/kiln/nix-profile/bin/node /opt/kiln/node/bin/node
	mkdir -p /usr/local/bin
	ln -sf /opt/kiln/nix-profile/bin/runuser /usr/local/bin/runuser
	# The Nix store cannot hold setuid files, so sudo gets a setuid copy.
	cp -L /opt/kiln/nix-profile/bin/sudo /usr/local/bin/sudo
	chmod 4755 /usr/local/bin/sudo
	mkdir -p /etc/pam.d
	printf 'auth sufficient pam_permit.so\naccount required pam_permit.so\nsession required pam_permit.so\n' > /etc/pam.d/sudo
	/opt/kiln/nix-profile/bin/useradd --create-home --home-dir "$build_home" --shell /bin/bash build
	install_sudoers
	# Nix runs in single-user mode, owned by the build user, so builds install
	# packages with nix-env as on build.sr.ht.
	chown -R build /nix
	printf 'https://nixos.org/channels/nixpkgs-unstable nixpkgs\n' > "$build_home/.nix-channels"
	printf 'export PATH="$HOME/.nix-profile/bin:/usr/local/bin:$PATH"\n' > "$build_home/.bash_profile"
	chown build "$build_home/.nix-channels" "$build_home/.bash_profile"
	;;
*)
	echo "setup-image.sh: unknown package manager '$manager'; expected apk, apt, dnf, pacman or nix" >&2
	exit 64
	;;
esac

mkdir -p /var/lib/kiln
chmod 0700 /var/lib/kiln
/opt/kiln/node/bin/node --version
git --version
