# gnuplot script of the stage A figures (keel study --report): cd into this folder, then gnuplot stageA.gp
set terminal pngcairo noenhanced size 1500,1050 font 'sans,10'
set grid
set xrange [0:1500]
set yrange [1.5:4.5]
set output 'stageA_layernorm.png'
set multiplot layout 3,3 title 'LayerNorm, width 64, 1500 steps: train loss (mean of 25 steps) by step; colour: placement, dashed: warm-up 200; dotted: level 3.0'
set title 'depth 6, lr 0.003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L6_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L6_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L6_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L6_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 12, lr 0.003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L12_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L12_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L12_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L12_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 24, lr 0.003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L24_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L24_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L24_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L24_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 6, lr 0.001'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L6_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L6_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L6_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L6_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 12, lr 0.001'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L12_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L12_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L12_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L12_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 24, lr 0.001'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L24_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L24_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L24_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L24_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 6, lr 0.0003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L6_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L6_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L6_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L6_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 12, lr 0.0003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L12_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L12_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L12_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L12_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 24, lr 0.0003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_layernorm_L24_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_layernorm_L24_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_layernorm_L24_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_layernorm_L24_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
unset multiplot
set output 'stageA_rmsnorm.png'
set multiplot layout 3,3 title 'RMSNorm, width 64, 1500 steps: train loss (mean of 25 steps) by step; colour: placement, dashed: warm-up 200; dotted: level 3.0'
set title 'depth 6, lr 0.003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L6_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L6_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L6_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L6_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 12, lr 0.003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L12_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L12_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L12_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L12_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 24, lr 0.003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L24_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L24_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L24_lr0.003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L24_lr0.003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 6, lr 0.001'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L6_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L6_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L6_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L6_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 12, lr 0.001'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L12_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L12_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L12_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L12_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 24, lr 0.001'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L24_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L24_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L24_lr0.001_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L24_lr0.001_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 6, lr 0.0003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L6_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L6_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L6_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L6_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 12, lr 0.0003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L12_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L12_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L12_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L12_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
set title 'depth 24, lr 0.0003'
set xlabel 'step'
set ylabel 'train loss'
set key inside top right opaque
plot 3 with lines dt 3 lc rgb 'black' title 'level 3.0', 'runs/A_post_rmsnorm_L24_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#d62728' title 'post, no warm-up', 'runs/A_post_rmsnorm_L24_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#d62728' title 'post, warm-up', 'runs/A_pre_rmsnorm_L24_lr0.0003_wu0_s1.run' using 1:2 with lines lw 2 dt 1 lc rgb '#1f77b4' title 'pre, no warm-up', 'runs/A_pre_rmsnorm_L24_lr0.0003_wu200_s1.run' using 1:2 with lines lw 2 dt 2 lc rgb '#1f77b4' title 'pre, warm-up'
unset multiplot
