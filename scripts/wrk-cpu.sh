# Sourced by the bench scripts: one wrk run against a server process, and the median of a column.
# Expects $server (its pid), $port, $header and $secs.

ticks="$(getconf CLK_TCK)"
cpu() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
# One run of `path`: the server's CPU µs per request (all its threads, user and system), and
# requests per second.
measure() {
    local path="$1" start end res
    start="$(cpu)"
    res="$(wrk -t2 -c64 -d"${secs}s" -H "$header" "http://127.0.0.1:$port$path")"
    end="$(cpu)"
    awk -v s="$start" -v e="$end" -v t="$ticks" '
        /requests in/ { n = $1 }
        /Requests\/sec/ { rps = $2 }
        END { printf "%.3f %.0f\n", (e - s) / t * 1e6 / n, rps }' <<<"$res"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
