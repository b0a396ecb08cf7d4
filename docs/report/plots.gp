# The report's plots; docs/report/build.py writes the .dat files into 'dir'.
set terminal svg size 640,420 dynamic font "DejaVu Sans,11" background rgb "white"
set border lw 0.8
set grid lc rgb "#dddddd"
set key outside bottom center horizontal maxcols 2 box
set style line 1 lc rgb "#888888" lw 2 dt 2
set style line 2 lc rgb "#2060a0" lw 2
set style line 3 lc rgb "#c04020" lw 2
set style line 4 lc rgb "#30a050" lw 2
f(n) = dir."/".n

set output f("throughput.svg")
set logscale x 2
set xlabel "connections (closed loop)"
set ylabel "requests per second"
set format y "%.0s%c"
set yrange [0:*]
plot f("redis_ping.dat")   u 1:2 w l ls 1 t "redis-server PING (reference)", \
     f("solo_iamat.dat")   u 1:2 w l ls 2 t "one server, IAMAT", \
     f("herd_iamat.dat")   u 1:2 w l ls 3 t "five-server herd, IAMAT (each floods)", \
     f("solo_whatsat.dat") u 1:2 w l ls 4 t "one server, WHATSAT (local places)"

set output f("latency.svg")
set logscale y 10
set ylabel "latency (microseconds)"
set format y "%g"
set yrange [*:*]
plot f("redis_ping.dat") u 1:4 w l ls 1 t "redis PING p99", \
     f("solo_iamat.dat") u 1:3 w l ls 2 dt 3 t "one server IAMAT p50", \
     f("solo_iamat.dat") u 1:4 w l ls 2 t "one server IAMAT p99", \
     f("herd_iamat.dat") u 1:3 w l ls 3 dt 3 t "herd IAMAT p50", \
     f("herd_iamat.dat") u 1:4 w l ls 3 t "herd IAMAT p99"

set output f("propagation.svg")
unset logscale
set logscale x 10
set xlabel "microseconds until all five servers hold the update"
set ylabel "fraction of updates"
set yrange [0:1.02]

plot f("propagation.dat") u 1:2 w steps ls 3 t "idle herd, updates given to Bailey"

set output f("forwarding.svg")
unset logscale
set xlabel "round (flood, trees, then redis, in turn)"
set ylabel "requests per second, c=20"
set format y "%.0s%c"
set yrange [0:*]
set xrange [0.5:*]
set xtics 1
plot f("forwarding.dat") u 1:4 w l ls 1 t "redis-server PING (reference)", \
     f("forwarding.dat") u 1:2 w l ls 2 t "herd IAMAT, flooding (8 link messages per update)", \
     f("forwarding.dat") u 1:3 w l ls 3 t "herd IAMAT, trees (4 link messages per update)"

set output f("forwarding_cpu.svg")
set xlabel "server"
set ylabel "CPU seconds per 3 s run (mean of the runs)"
set format y "%g"
set xrange [*:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 1.0 noborder
plot f("forwarding_cpu.dat") u 2:xtic(1) lc rgb "#2060a0" t "flooding", \
     f("forwarding_cpu.dat") u 3 lc rgb "#c04020" t "trees"

set output f("replicated.svg")
set xlabel "round (herd, redis SET, redis PING, in turn)"
set ylabel "requests per second, c=20"
set format y "%.0s%c"
set yrange [0:*]
set xrange [0.5:*]
set xtics 1
plot f("replicated.dat") u 1:4 w l ls 1 t "redis-server PING (stores nothing)", \
     f("replicated.dat") u 1:3 w l ls 4 t "redis-server SET, master and four replicas", \
     f("replicated.dat") u 1:2 w l ls 3 t "herd IAMAT, five servers (each update reaches all five)"

set output f("asyncio.svg")
set xlabel ""
set ylabel "requests per second, five servers, c=20"
set xrange [*:*]
set style data histogram
set style histogram clustered gap 1
set style fill solid 1.0 noborder
plot f("asyncio.dat") u 2:xtic(1) lc rgb "#c04020" t "IAMAT (each floods)", \
     f("asyncio.dat") u 3 lc rgb "#30a050" t "WHATSAT (local places)"
