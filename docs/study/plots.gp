# gnuplot script of the study's plots: cd into this folder, then gnuplot plots.gp
set terminal pngcairo noenhanced size 900,560 font 'sans,10'
set datafile separator ','
set grid
set key outside right
set output 'init_grad.png'
set title 'At initialization: gradient norm of each block''s W2 (LayerNorm)'
set xlabel 'block (1 = first)'
set ylabel '||dL/dW2||'
set logscale y
plot 'init_pre_L6.csv' every ::1 using 1:2 with linespoints dt 2 lc 1 pt 6 title 'pre L=6', 'init_pre_L12.csv' every ::1 using 1:2 with linespoints dt 2 lc 2 pt 6 title 'pre L=12', 'init_pre_L24.csv' every ::1 using 1:2 with linespoints dt 2 lc 3 pt 6 title 'pre L=24', 'init_pre_L48.csv' every ::1 using 1:2 with linespoints dt 2 lc 4 pt 6 title 'pre L=48', 'init_post_L6.csv' every ::1 using 1:2 with linespoints dt 1 lc 1 pt 7 title 'post L=6', 'init_post_L12.csv' every ::1 using 1:2 with linespoints dt 1 lc 2 pt 7 title 'post L=12', 'init_post_L24.csv' every ::1 using 1:2 with linespoints dt 1 lc 3 pt 7 title 'post L=24', 'init_post_L48.csv' every ::1 using 1:2 with linespoints dt 1 lc 4 pt 7 title 'post L=48'
set output 'init_residual.png'
set title 'At initialization: residual-stream norm entering each block (LayerNorm)'
set xlabel 'depth (block index; last point: after the last block)'
set ylabel 'mean ||x||'
plot 'init_pre_L6.csv' every ::1 using 1:3 with linespoints dt 2 lc 1 pt 6 title 'pre L=6', 'init_pre_L12.csv' every ::1 using 1:3 with linespoints dt 2 lc 2 pt 6 title 'pre L=12', 'init_pre_L24.csv' every ::1 using 1:3 with linespoints dt 2 lc 3 pt 6 title 'pre L=24', 'init_pre_L48.csv' every ::1 using 1:3 with linespoints dt 2 lc 4 pt 6 title 'pre L=48', 'init_post_L6.csv' every ::1 using 1:3 with linespoints dt 1 lc 1 pt 7 title 'post L=6', 'init_post_L12.csv' every ::1 using 1:3 with linespoints dt 1 lc 2 pt 7 title 'post L=12', 'init_post_L24.csv' every ::1 using 1:3 with linespoints dt 1 lc 3 pt 7 title 'post L=24', 'init_post_L48.csv' every ::1 using 1:3 with linespoints dt 1 lc 4 pt 7 title 'post L=48'
unset logscale y
set datafile separator whitespace
set xlabel 'step'
set ylabel 'train loss (EMA 0.9)'
set yrange [1.5:4.5]
set output 'train_curves.png'
set title 'Training: post (solid) vs pre (dashed); dotted: unigram entropy'
plot 'runs/pre_layernorm_L6_lr0.003_wu0.dat' using 1:2 with lines dt 2 lw 1.5 title 'pre_layernorm_L6_lr0.003_wu0', 'runs/post_layernorm_L6_lr0.003_wu0.dat' using 1:2 with lines dt 1 lw 1.5 title 'post_layernorm_L6_lr0.003_wu0', 'runs/pre_layernorm_L24_lr0.003_wu0.dat' using 1:2 with lines dt 2 lw 1.5 title 'pre_layernorm_L24_lr0.003_wu0', 'runs/post_layernorm_L24_lr0.003_wu0.dat' using 1:2 with lines dt 1 lw 1.5 title 'post_layernorm_L24_lr0.003_wu0', 'runs/pre_rmsnorm_L24_lr0.003_wu0.dat' using 1:2 with lines dt 2 lw 1.5 title 'pre_rmsnorm_L24_lr0.003_wu0', 'runs/post_rmsnorm_L24_lr0.003_wu0.dat' using 1:2 with lines dt 1 lw 1.5 title 'post_rmsnorm_L24_lr0.003_wu0', 'runs/post_layernorm_L24_lr0.003_wu100.dat' using 1:2 with lines dt 1 lw 1.5 title 'post_layernorm_L24_lr0.003_wu100', 3.3091 with lines dt 3 lc rgb 'black' title 'unigram 3.31'
set output 'alternatives.png'
set title 'Depth 24, lr 0.003, no warm-up: the alternatives'
plot 'runs/pre_layernorm_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'pre_layernorm_L24_lr0.003_wu0', 'runs/post_layernorm_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'post_layernorm_L24_lr0.003_wu0', 'runs/deepnorm_layernorm_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'deepnorm_layernorm_L24_lr0.003_wu0', 'runs/pre_layernorm_ls1e-05_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'pre_layernorm_ls1e-05_L24_lr0.003_wu0', 'runs/sandwich_layernorm_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'sandwich_layernorm_L24_lr0.003_wu0', 'runs/pre_dyt_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'pre_dyt_L24_lr0.003_wu0', 'runs/pre_batchnorm_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'pre_batchnorm_L24_lr0.003_wu0', 'runs/pre_none_L24_lr0.003_wu0.dat' using 1:2 with lines lw 1.5 title 'pre_none_L24_lr0.003_wu0', 3.3091 with lines dt 3 lc rgb 'black' title 'unigram 3.31'
