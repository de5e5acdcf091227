# A real dynamically linked program laid out as a Nix package: Debian's
# python3.11 and the libraries it links, copied into the store and patched
# with patchelf so that the interpreter and the rpath are store paths. Nix then
# finds glibc, zlib and expat in python3's closure by scanning the rpath.
#
# Builders read /usr and /lib of the host, which needs `sandbox = false`.
{ run, hostPatchelf, hostPython, hostPythonLib, hostLibDir }:

let
  hashOf = f: builtins.hashFile "sha256" f;
  # "python3.11" for /usr/bin/python3.11: the binary's and the stdlib's name.
  py = baseNameOf hostPython;

  # copyLibs: a library package holding host libraries FILES under lib/,
  # with its rpath set to RPATH when RPATH is not empty.
  copyLibs = name: files: rpath: run name ''
    mkdir -p $out/lib
    for f in ${toString files}; do
      cp -L ${hostLibDir}/$f $out/lib/$f
      chmod 0755 $out/lib/$f
      ${if rpath == "" then "" else "${hostPatchelf} --set-rpath ${rpath} $out/lib/$f"}
      chmod 0555 $out/lib/$f
    done
  '' {
    hostHashes = map (f: hashOf "${hostLibDir}/${f}") files;
  };

  # glibc is not patched: its libraries find each other by soname once the
  # interpreter (ld-linux-x86-64.so.2, from this package) has loaded them.
  glibc = copyLibs "glibc" [ "ld-linux-x86-64.so.2" "libc.so.6" "libm.so.6" ] "";
  zlib = copyLibs "zlib" [ "libz.so.1" ] "${glibc}/lib";
  expat = copyLibs "expat" [ "libexpat.so.1" ] "${glibc}/lib";

  # Extension modules in lib-dynload are kept only when they need nothing but
  # glibc; the rest (ssl, sqlite, ctypes, ...) would drag in more libraries.
  python3 = run "python3" ''
    p=$out/bin/${py}
    lib=$out/lib/${py}
    mkdir -p $out/bin $lib/lib-dynload
    cp ${hostPython} $p
    chmod 0755 $p
    ${hostPatchelf} \
      --set-interpreter ${glibc}/lib/ld-linux-x86-64.so.2 \
      --set-rpath ${glibc}/lib:${zlib}/lib:${expat}/lib $p
    chmod 0555 $p
    ln -s ${py} $out/bin/python3

    # The stdlib without tests, bytecode caches, the static libpython and
    # pip's wheels. Python finds its prefix by looking for
    # lib/${py}/os.py above the directory of its binary.
    cd ${hostPythonLib}
    find . \( -name __pycache__ -o -name test -o -name tests -o -name idle_test \
      -o -path "./config-*" -o -path ./ensurepip \
      -o -path ./lib2to3 -o -path ./pydoc_data -o -path ./lib-dynload \
      -o -name sitecustomize.py -o -name EXTERNALLY-MANAGED \) -prune -o -print |
      cpio -o -H newc 2>/dev/null | (cd $lib && cpio -id 2>/dev/null)

    for so in lib-dynload/*.so; do
      case $so in lib-dynload/_test* | lib-dynload/xx*) continue ;; esac
      ok=1
      for n in $(${hostPatchelf} --print-needed $so); do
        case $n in libc.so.6 | libm.so.6) ;; *) ok= ;; esac
      done
      [ -n "$ok" ] || continue
      cp $so $lib/$so
      chmod 0755 $lib/$so
      ${hostPatchelf} --set-rpath ${glibc}/lib $lib/$so
    done
    # Bytecode, compiled now because the store is read-only at run time;
    # unchecked-hash because Nix resets every mtime to 1.
    $p -m compileall -q -j 0 --invalidation-mode unchecked-hash $lib >/dev/null
    chmod -R a-w $out
  '' {
    hostHash = hashOf hostPython;
  };
in
{
  inherit glibc zlib expat python3;
}
