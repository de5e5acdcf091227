# Generated DAGs of store paths, for closure and mount benchmarks.
#
# One family of nodes dag-node-1, dag-node-2, ... is shared by every size, so
# building dag-10000 reuses dag-1000's nodes. Node k stands for the range
# (k - lowbit(k), k] of a Fenwick tree, lowbit(k) being k's lowest set bit:
#
#   odd k        refers to busybox only (a leaf);
#   even k       refers to its sub-ranges k-1, k-2, k-4, ..., k - lowbit(k)/2
#                and to 1-3 pseudo-random nodes inside its own range (so the
#                graph has diamonds, not just a tree);
#   dag-N (top)  refers to busybox and to the nodes whose ranges cover
#                1..N-2 (at most log2 N of them).
#
# So the runtime closure of node k is exactly its lowbit(k) nodes plus
# busybox, and dag-N's is exactly N paths: N-2 nodes, busybox and itself.
# References are recorded by Nix's own scanner: each node writes the store
# paths it refers to into its output. Even nodes are directories (a deps file
# inside), odd nodes plain files, so views get both kinds of mount.
#
# Build order: node k also takes node k-1 as an input that it does not write
# into its output, a build-time-only edge that is not in any runtime closure.
# It keeps exactly one node buildable at a time, because Nix 2.8's scheduler
# re-tries every runnable goal whenever a build slot frees, which is quadratic
# when thousands are runnable at once. Small runtime closures matter too: each
# build costs time in proportion to its inputs' closure.
{ run, busybox }:

let
  maxNodes = 10000;

  mod = a: b: a - (a / b) * b;
  lowbit = k: if mod k 2 == 1 then 1 else 2 * lowbit (k / 2);
  # A 31-bit linear congruential step; its high bits are the useful ones.
  lcg = x: mod (x * 1103515245 + 12345) 2147483648;
  rand = k: i: (lcg (lcg (k * 7919 + i * 104729 + 1))) / 16;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  # pow2s n: [1 2 4 ... ] below n.
  pow2s = n: if n <= 1 then [ ] else pow2s (n / 2) ++ [ (n / 2) ];

  depsOf = k:
    let
      r = lowbit k;
      children = map (d: k - d) (pow2s r);
      extra = builtins.genList (i: k - 1 - mod (rand k (i + 1)) (r - 1)) (1 + mod (rand k 0) 3);
    in
    if r == 1 then [ ] else unique (children ++ extra);

  # prefix n: the nodes whose ranges partition 1..n.
  prefix = n: if n == 0 then [ ] else [ n ] ++ prefix (n - lowbit n);

  nodeAt = k: builtins.elemAt nodes (k - 1);

  # write REFS DEST: a builder that writes the store paths REFS into DEST.
  write = name: refs: dest: extra: run name ''
    ${if dest == "$out/deps" then "mkdir $out" else ""}
    while IFS= read -r p; do echo "$p"; done < "$refsPath" > ${dest}
  '' ({
    refs = builtins.concatStringsSep "\n" (map toString refs) + "\n";
    passAsFile = [ "refs" ];
  } // extra);

  node = k:
    write "dag-node-${toString k}"
      (if mod k 2 == 1 then [ busybox ] else map nodeAt (depsOf k))
      (if mod k 2 == 0 then "$out/deps" else "$out")
      (if k == 1 then { } else { after = nodeAt (k - 1); });

  nodes = builtins.genList (i: node (i + 1)) maxNodes;
in
n:
assert n >= 2 && n <= maxNodes + 2;
write "dag-${toString n}" ([ busybox ] ++ map nodeAt (prefix (n - 2))) "$out/deps" { }
