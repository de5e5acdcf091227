# A nix client that lives in the store, for the Nix-inside tests: Debian's
# nix binary (nix-build, nix-store, ... are links to it; it dispatches on
# argv[0]) with every shared library it links copied beside it and patched
# with patchelf, as python.nix does for python3. Its closure is nix-client
# and glibc.
#
# hostNixLibs is the list of libraries `ldd /usr/bin/nix` resolves, without
# the ones glibc provides; scripts/teststore computes it. Builders read /usr
# and /lib of the host, which needs `sandbox = false`.
{ run, glibc, hostPatchelf, hostNix, hostNixLibs, hostLibDir }:

let
  hashOf = f: builtins.hashFile "sha256" f;
  # nix dlopens the NSS modules at start (and warns when it cannot): glibc
  # 2.34+ ships them as stubs, which are found through nix's rpath here.
  nss = builtins.filter builtins.pathExists
    (map (n: "${hostLibDir}/${n}") [ "libnss_dns.so.2" "libnss_files.so.2" ]);
  libs = if hostNixLibs == [ ] then throw "nix-client: hostNixLibs is empty (build it with scripts/teststore)" else hostNixLibs ++ nss;
  # The names nix answers to; nix-daemon is left out: a job is a client.
  commands = [
    "nix-build" "nix-channel" "nix-collect-garbage" "nix-copy-closure" "nix-env"
    "nix-hash" "nix-instantiate" "nix-prefetch-url" "nix-shell" "nix-store"
  ];
in
run "nix-client" ''
  mkdir -p $out/bin $out/lib
  rpath=$out/lib:${glibc}/lib
  for f in ${toString libs}; do
    n=$(basename $f)
    cp -L $f $out/lib/$n
    chmod 0755 $out/lib/$n
    ${hostPatchelf} --set-rpath $rpath $out/lib/$n
    chmod 0555 $out/lib/$n
  done
  cp ${hostNix} $out/bin/nix
  chmod 0755 $out/bin/nix
  ${hostPatchelf} --set-interpreter ${glibc}/lib/ld-linux-x86-64.so.2 --set-rpath $rpath $out/bin/nix
  chmod 0555 $out/bin/nix
  for c in ${toString commands}; do ln -s nix $out/bin/$c; done
'' {
  hostHash = hashOf hostNix;
  hostHashes = map hashOf libs;
}
