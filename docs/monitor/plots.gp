set terminal pngcairo size 1000,700 font ',10'
set output 'stream.png'
set multiplot layout 4,1 title 'first model: combined monitor score (window 256, every 64 tokens); each stream switches from a clean segment of its own at token 8192'
set key top left; set xrange [0:16384]; set arrow 1 from 8192, graph 0 to 8192, graph 1 nohead dt 3
do for [i=0:3] { name = word('jargon shuffled flipcase random', i+1)
  set ylabel name; plot 'stream.csv' index i using 2:3 with lines lw 2 title 'monitor', '' index i using 2:4 with lines dt 2 lc 'red' title 'threshold' }
unset multiplot
set output 'stream_nll.png'
set multiplot layout 4,1 title 'baseline detector: mean NLL of the window (256), same streams'
do for [i=0:3] { name = word('jargon shuffled flipcase random', i+1)
  set ylabel name; plot 'stream.csv' index i using 2:5 with lines lw 2 lc 'dark-green' title 'NLL (nats)', '' index i using 2:6 with lines dt 2 lc 'red' title 'threshold' }
unset multiplot; unset arrow 1; set xrange [*:*]
set output 'auroc.png'
set terminal pngcairo size 900,500
set logscale x 2; set xlabel 'window (tokens)'; set ylabel 'AUROC (shift vs clean)'; set yrange [0.4:1.02]; set key bottom right
set title 'AUROC per window size: monitor (solid) vs model NLL (dashed)'
plot for [k=0:3] 'auroc.dat' using 1:(column(2+2*k)) with linespoints lw 2 lc k+1 title word('jargon shuffled flipcase random',k+1).' monitor', \
     for [k=0:3] 'auroc.dat' using 1:(column(3+2*k)) with linespoints dt 2 lc k+1 title word('jargon shuffled flipcase random',k+1).' NLL'
unset logscale x
set output 'layers.png'
set title 'which norms carry the signal: AUROC of each norm alone (window 256)'
set style data histograms; set style histogram clustered gap 1; set style fill solid 0.8; set xtics rotate by -45
set xlabel ''; set yrange [0:1.05]; set key outside right
plot 'layers.dat' using 3:xtic(2) title 'jargon', '' using 4 title 'shuffled', '' using 5 title 'flipcase', '' using 6 title 'random'
