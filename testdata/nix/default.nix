# The closet test store: small, real store paths built by real Nix, with no
# nixpkgs and no network. Build with scripts/teststore, which links every
# attribute below into .fixture/ under the same name.
#
# Everything is built by the host's static busybox (copied into the store first)
# and, for the python3 closure, by copying Debian's files and patchelf-ing them.
# That needs `sandbox = false` (Debian's default): builders read /usr and /lib.
# The content hash of every host file a builder copies is put into the
# derivation, so an upgraded host file gives a new store path instead of a
# stale one.
{
  # Host files (strings, not Nix paths, so that evaluation never copies them).
  hostBusybox ? "/bin/busybox",
  hostPatchelf ? "/usr/bin/patchelf",
  hostPython ? "/usr/bin/python3.11",
  hostPythonLib ? "/usr/lib/python3.11",
  hostLibDir ? "/lib/x86_64-linux-gnu",
  hostBash ? "/bin/bash",
  hostNix ? "/usr/bin/nix",
  # Space-separated: the libraries of hostNix that glibc does not provide
  # (scripts/teststore passes what ldd finds).
  hostNixLibs ? "",
}:

let
  system = "x86_64-linux";

  # The static busybox as a directory, so that `${busybox}/bin/sh` exists and
  # argv[0] (which Nix sets to the builder's base name) names a real applet.
  # Its own builder is the host busybox, whose base name is "busybox".
  busybox = derivation {
    name = "busybox";
    inherit system;
    builder = hostBusybox;
    args = [ "sh" "-e" "-c" ''
      bb=${hostBusybox}
      $bb mkdir -p $out/bin
      $bb cp $bb $out/bin/busybox
      $bb chmod 0555 $out/bin/busybox
      cd $out/bin
      for a in $(./busybox --list); do
        [ "$a" = busybox ] || ./busybox ln -s busybox "$a"
      done
    '' ];
    hostHash = builtins.hashFile "sha256" hostBusybox;
  };

  # run: one derivation whose builder is `busybox sh -e -c SCRIPT`. Busybox's
  # shell runs its applets without PATH, but PATH is set for clarity and for
  # any #! script the builder runs.
  run = name: script: attrs: derivation ({
    inherit name system;
    builder = "${busybox}/bin/sh";
    args = [ "-e" "-c" script ];
    PATH = "${busybox}/bin";
  } // attrs);

  # lib: a library package. Its files mention only itself.
  lib = run "lib" ''
    mkdir -p $out/share $out/lib
    echo "hello from lib" > $out/share/greeting.txt
    cat > $out/lib/libgreet.sh <<EOS
    # greet NAME: print the greeting shipped in lib, addressed to NAME.
    greet() {
      read -r g < $out/share/greeting.txt
      echo "\$g, \$1"
    }
    EOS
  '' { };

  # app: a program that needs lib and busybox at run time. Both store paths
  # are written into bin/app, so Nix's reference scanner records them.
  app = run "app" ''
    mkdir -p $out/bin
    cat > $out/bin/app <<EOS
    #!${busybox}/bin/sh
    PATH=${busybox}/bin
    . ${lib}/lib/libgreet.sh
    greet "\''${1:-app}"
    EOS
    chmod 0555 $out/bin/app
  '' { };

  # tenant: a source tree nothing refers to; the demo's victim.
  tenant = who: run "tenant-${who}-src" ''
    mkdir -p $out
    echo "${who}'s secret: the answer is ${who}-42" > $out/secret.txt
    cat > $out/main.c <<EOS
    #include <stdio.h>
    int main(void) { puts("${who}'s homework"); return 0; }
    EOS
  '' { };

  # snoop: the demo. It finds a tenant's secret by glob, never by hash, so no
  # tenant is in its closure; inside closet it must see nothing to read.
  snoop = run "snoop" ''
    mkdir -p $out/bin
    cat > $out/bin/snoop <<'EOS'
    #!${busybox}/bin/sh
    # usage: snoop [TENANT]   (default: alice)
    PATH=${busybox}/bin
    who=''${1:-alice}
    n=$(ls /nix/store 2>/dev/null | wc -l)
    echo "snoop: /nix/store lists $n entries"
    ls /nix/store 2>&1 | head -n 20 | sed 's/^/  /'
    [ "$n" -le 20 ] || echo "  ..."
    found=
    for f in /nix/store/*-tenant-$who-src/secret.txt; do
      if [ -r "$f" ]; then
        echo "snoop: read $f: $(cat "$f")"
        found=1
      fi
    done
    if [ -z "$found" ]; then
      echo "snoop: no secret of tenant $who is visible"
      exit 1
    fi
    EOS
    chmod 0555 $out/bin/snoop
  '' { };

  # A store path that is itself a symlink (as some outputs are): a view
  # must copy the link, since a symlink cannot be a mount point.
  busybox-link = run "busybox-link" ''
    ln -s ${busybox}/bin/busybox $out
  '' { };

  dag = import ./dag.nix { inherit run busybox; };

  python = import ./python.nix {
    inherit run hostPatchelf hostPython hostPythonLib hostLibDir;
  };

  nix-client = import ./nix-client.nix {
    inherit run hostPatchelf hostNix hostLibDir;
    inherit (python) glibc;
    hostNixLibs = builtins.filter (f: builtins.isString f && f != "") (builtins.split " +" hostNixLibs);
  };

  bash = import ./bash.nix {
    inherit run hostPatchelf hostBash hostLibDir;
    inherit (python) glibc;
  };
in
{
  inherit busybox lib app snoop busybox-link nix-client bash;
  tenant-alice-src = tenant "alice";
  tenant-bob-src = tenant "bob";
  dag-10 = dag 10;
  dag-100 = dag 100;
  dag-1000 = dag 1000;
  dag-3000 = dag 3000;
  dag-10000 = dag 10000;
  inherit (python) glibc zlib expat python3;
}
