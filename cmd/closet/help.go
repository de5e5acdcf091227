package main

// runLong is closet run's long help; limitsHelp (limits.go) follows it.
const runLong = `Run CMD in a rootless sandbox whose /nix/store holds exactly the closure of
the ROOTs: nothing else of the store, no /nix/var, no nix-daemon socket.

  closet run ROOT... -- CMD [ARGS...]   CMD is looked up in the ROOTs' bin
                                        directories (or give a path)
  closet run -- CMD [ARGS...]           CMD is looked up on your PATH; its real
                                        file must be in the store; its own
                                        closure is the view

ROOTs are what 'closet closure' takes: store paths, links into the store
(./result, profiles), or command names; a .drv stands for its inputs. They may
also be what Nix users name, realised with your own nix (so the daemon's rules
for you apply) before the sandbox starts: flake installables (anything with a
'#', such as .#app or path:/dir#pkg), DRV^OUT, -f FILE -A ATTR, --expr EXPR.

Inside: a read-only tmpfs root; the closure at /nix/store, read-only; a fresh
/proc; /dev with null, zero, full, random, urandom, tty, a new pts instance and
shm; tmpfs /tmp and $HOME; /etc with passwd, group, hosts and nsswitch.conf
(resolv.conf only with --network); the current directory at the same path.
The job gets a clean environment: PATH from the roots' bin directories, HOME,
USER, TERM, LANG, plus --env and --preserve. It runs in a new session, in its
own user, mount, pid, ipc, uts, net and cgroup namespaces, with no
capabilities, no_new_privs, a seccomp allowlist (a grading job, --cwd none or
ro with limits, also gets no inotify: --seccomp grading) and a Landlock
fence. It never holds your terminal: with --tty auto it gets a pty of its own
when stdin is a terminal, and any other terminal among its stdin, stdout and
stderr is relayed through a pipe.

Exit status: the command's own, or 128+N when signal N ended it. closet's
own failures never look like the command's: 125 closet failed (bad flags or
roots, an unreadable store, a sandbox that could not be set up: nothing ran),
126 the command could not be executed, 127 the command was not found.`

// limitsHelp is appended to run's long help.
const limitsHelp = `

Limits, none unless given. SIZE is bytes, or a number with k, M, G or T
(powers of 1024; fractions allowed): 512k, 64M, 1.5G. T is seconds (1.5) or
a duration: 2s, 500ms, 1m. Zero and negative values are refused.

  --wall-time T     real time from the target's start     closet's timer
  --cpu-time T      CPU time of all the job's processes   the cgroup (else /proc),
                                                          polled; RLIMIT_CPU behind
  --silent-time T   time without any output               closet's timer
  --memory SIZE     memory of the job, closet's init's    the cgroup; without one
                    few MB included                       RLIMIT_AS, which caps each
                                                          process's address space
                                                          instead (--cgroup require
                                                          refuses that)
  --pids N          processes and threads of the job      the cgroup; else
                                                          RLIMIT_NPROC when the
                                                          job has host ids of its
                                                          own (--host-uid)
  --output SIZE     bytes of stdout+stderr passed on;     closet's pipes
                    writing more ends the job
  --file-size SIZE  largest file the job writes           RLIMIT_FSIZE
  --open-files N    open files per process (16 or more)   RLIMIT_NOFILE
  --tmp-size SIZE   each writable tmpfs: /tmp, /dev/shm,  their size=
                    $HOME (default: --memory, if given)

cgroups: closet makes the job's cgroups beneath its own, places the job in
them before any of its code runs, and removes them after: a delegated cgroup
v2 (systemd-run --user --scope -p Delegate=yes closet run ...: closet moves
itself into a leaf of its scope), or the v1 hierarchies as root. Without a
memory cgroup, --memory also refuses memfd_create and SysV shared memory, and
/tmp, /dev/shm and $HOME share one --tmp-size budget. --output, --silent-time and --report
carry the job's stdout and stderr through pipes (so no terminal).

The verdict (--report FILE, as JSON or, with --report-format isolate, as
isolate's --meta key:value file) is written once every process of the job
is gone: OK, RE (non-zero exit), SG (a signal), TO (wall, CPU or silent
time), ML (memory), OL (output), XX (closet failed, not the job), with the
figures and the mechanism that enforced each limit. closet's own exit
status follows the verdict, with or without --report:

  OK 0    RE the job's status    SG 128+signal    TO 124    ML 123    OL 122
  XX 125: bad input or a sandbox that failed (126: the command could not be
  executed, 127: it was not found)`
