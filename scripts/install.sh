#!/bin/bash
# Install the built mos (target/release) under PREFIX, staged in DESTDIR:
#   PREFIX/bin             mos, mossubmit, shadowd, placer, mos-condor-job, mos-slurm-job
#   PREFIX/lib             libmosshim.so (what `mos run` preloads)
#   PREFIX/lib/mos         mosrestart (the restorer)
#   PREFIX/lib/systemd/system   mos-shadowd.service, mos-placer.service
#   PREFIX/share/man/man1  man pages;  PREFIX/share/{bash-completion,zsh,fish}  completions
#   PREFIX/share/doc/mos   README, example settings for the units
# Usage: scripts/install.sh [PREFIX [DESTDIR]]  (make install PREFIX=... DESTDIR=...)
set -euo pipefail
PREFIX=${1:-/usr/local}
DESTDIR=${2:-}
REL=${REL:-target/release}
root="$DESTDIR$PREFIX"
for f in mos mossubmit shadowd placer mosrestart libmosshim.so; do
    [ -e "$REL/$f" ] || { echo "install: $REL/$f is missing: run make first" >&2; exit 1; }
done
install -d "$root/bin" "$root/lib/mos" "$root/lib/systemd/system" "$root/share/man/man1" \
    "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" \
    "$root/share/fish/vendor_completions.d" "$root/share/doc/mos"
for p in mos mossubmit shadowd placer; do
    install -m 0755 "$REL/$p" "$root/bin/$p"
done
# batch-system wrappers (docs/htcondor.md, docs/slurm.md)
install -m 0755 scripts/mos-condor-job scripts/mos-slurm-job "$root/bin/"
install -m 0755 "$REL/libmosshim.so" "$root/lib/libmosshim.so"
install -m 0755 "$REL/mosrestart" "$root/lib/mos/mosrestart"
for u in mos-shadowd mos-placer; do
    sed "s|@PREFIX@|$PREFIX|g" "dist/systemd/$u.service.in" > "$root/lib/systemd/system/$u.service"
    chmod 0644 "$root/lib/systemd/system/$u.service"
done
docs=$(mktemp -d)
trap 'rm -rf "$docs"' EXIT
for p in mos mossubmit shadowd placer; do
    "$REL/$p" --generate-docs "$docs"
done
install -m 0644 "$docs"/man/man1/*.1 "$root/share/man/man1/"
install -m 0644 "$docs"/completions/bash/* "$root/share/bash-completion/completions/"
install -m 0644 "$docs"/completions/zsh/* "$root/share/zsh/site-functions/"
install -m 0644 "$docs"/completions/fish/* "$root/share/fish/vendor_completions.d/"
install -m 0644 README.md docs/htcondor.md docs/slurm.md dist/cluster.toml.example dist/shadowd.env.example dist/placer.env.example "$root/share/doc/mos/"
echo "installed mos in $root"
