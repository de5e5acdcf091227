# Debian's bash patched into the store, as python.nix does for python3: a
# bash builder for derivations that nix print-dev-env / nix develop accept
# (Nix 2.8 refuses any other builder), and a bash for closet shell. Its
# closure is bash and glibc.
#
# Builders read /usr and /lib of the host, which needs `sandbox = false`.
{ run, glibc, hostPatchelf, hostBash, hostLibDir }:

let
  hashOf = f: builtins.hashFile "sha256" f;
  tinfo = "${hostLibDir}/libtinfo.so.6";
in
run "bash" ''
  mkdir -p $out/bin $out/lib
  cp -L ${tinfo} $out/lib/libtinfo.so.6
  chmod 0755 $out/lib/libtinfo.so.6
  ${hostPatchelf} --set-rpath ${glibc}/lib $out/lib/libtinfo.so.6
  chmod 0555 $out/lib/libtinfo.so.6
  cp ${hostBash} $out/bin/bash
  chmod 0755 $out/bin/bash
  ${hostPatchelf} --set-interpreter ${glibc}/lib/ld-linux-x86-64.so.2 \
    --set-rpath $out/lib:${glibc}/lib $out/bin/bash
  chmod 0555 $out/bin/bash
'' {
  hostHashes = [ (hashOf hostBash) (hashOf tinfo) ];
}
