# gnuplot script of the study's plots: cd into this folder, then gnuplot plots.gp
set terminal pngcairo noenhanced size 900,560 font 'sans,10'
set datafile separator ','
set grid
set key outside right
set output 'init_grad.png'
set title 'At initialization: gradient norm of each block''s W2 (LayerNorm)'
set xlabel 'relative depth: block / L (1 = the last block)'
set ylabel '||dL/dW2||'
set logscale y
plot 'init_pre_L6.csv' every ::1 using ($1/6.0):2 with linespoints dt 2 lc 1 pt 6 title 'pre L=6', 'init_pre_L12.csv' every ::1 using ($1/12.0):2 with linespoints dt 2 lc 2 pt 6 title 'pre L=12', 'init_pre_L24.csv' every ::1 using ($1/24.0):2 with linespoints dt 2 lc 3 pt 6 title 'pre L=24', 'init_pre_L48.csv' every ::1 using ($1/48.0):2 with linespoints dt 2 lc 4 pt 6 title 'pre L=48', 'init_post_L6.csv' every ::1 using ($1/6.0):2 with linespoints dt 1 lc 1 pt 7 title 'post L=6', 'init_post_L12.csv' every ::1 using ($1/12.0):2 with linespoints dt 1 lc 2 pt 7 title 'post L=12', 'init_post_L24.csv' every ::1 using ($1/24.0):2 with linespoints dt 1 lc 3 pt 7 title 'post L=24', 'init_post_L48.csv' every ::1 using ($1/48.0):2 with linespoints dt 1 lc 4 pt 7 title 'post L=48'
set output 'init_residual.png'
set title 'At initialization: residual-stream norm entering each block (LayerNorm)'
set xlabel 'relative depth: (block - 1) / L (1 = after the last block)'
set ylabel 'mean ||x||'
plot 'init_pre_L6.csv' every ::1 using (($1-1)/6.0):3 with linespoints dt 2 lc 1 pt 6 title 'pre L=6', 'init_pre_L12.csv' every ::1 using (($1-1)/12.0):3 with linespoints dt 2 lc 2 pt 6 title 'pre L=12', 'init_pre_L24.csv' every ::1 using (($1-1)/24.0):3 with linespoints dt 2 lc 3 pt 6 title 'pre L=24', 'init_pre_L48.csv' every ::1 using (($1-1)/48.0):3 with linespoints dt 2 lc 4 pt 6 title 'pre L=48', 'init_post_L6.csv' every ::1 using (($1-1)/6.0):3 with linespoints dt 1 lc 1 pt 7 title 'post L=6', 'init_post_L12.csv' every ::1 using (($1-1)/12.0):3 with linespoints dt 1 lc 2 pt 7 title 'post L=12', 'init_post_L24.csv' every ::1 using (($1-1)/24.0):3 with linespoints dt 1 lc 3 pt 7 title 'post L=24', 'init_post_L48.csv' every ::1 using (($1-1)/48.0):3 with linespoints dt 1 lc 4 pt 7 title 'post L=48'
