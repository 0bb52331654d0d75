# perfstacks.awk counts, for one process, how many of its perf samples
# each function is on the stack of (inclusive samples), from the output of
# `perf script -F pid,ip,sym` of a recording made with -g. BENCHMARKS.md
# ("Where the time goes, measured with perf") uses it:
#
#   perf script -i perf.data -F pid,ip,sym | awk -v pid=PID -f tools/perfstacks.awk | sort -rn | head -60
#
# The first line printed is the process's total ("TOTAL").

function flush(   f) {
	if (cur == pid) {
		total++
		for (f in seen) count[f]++
	}
	split("", seen)
}

/^[^\t]/ && NF > 0 { flush(); cur = $1; next }   # a sample: "PID"
/^\t/ {                                          # a frame: "<tab>ADDR SYMBOL"
	sub(/^\t[ ]*[0-9a-f]+ /, "")
	seen[$0] = 1
}
END {
	flush()
	print total, "TOTAL"
	for (f in count) print count[f], f
}
