/* Row kernels of the per-ISA template (rows_template.c): the backward passes
 * of softmax and log_softmax. */

static void FN(softmax_backward_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    const int64_t k = A->k;
    for (int64_t i = r0; i < r1; i++) {
        const T *g = (const T *)A->x + i * k;
        const T *y = (const T *)A->y + i * k;
        T *o = (T *)A->out + i * k;
        double d = 0.0;
        int64_t j = 0;
        for (;;) {
            int64_t lim = k - j < BLOCK ? k - j : BLOCK;
            lim -= lim % (2 * VL);
            if (lim == 0)
                break;
            const int64_t end = j + lim;
            V s0 = v_zero(), s1 = v_zero();
            for (; j < end; j += 2 * VL) {
                s0 = v_fma(v_load(g + j), v_load(y + j), s0);
                s1 = v_fma(v_load(g + j + VL), v_load(y + j + VL), s1);
            }
            d += v_hsum_d(v_add(s0, s1));
        }
        V s = v_zero();
        for (; j + VL <= k; j += VL)
            s = v_fma(v_load(g + j), v_load(y + j), s);
        if (j < k) {
            VTM tm = v_tailmask(k - j);
            s = v_fma(v_load_tail(g + j, tm, (T)0), v_load_tail(y + j, tm, (T)0), s);
        }
        d += v_hsum_d(s);
        const V vd = v_set1((T)d);
        for (j = 0; j + VL <= k; j += VL)
            v_store(o + j, v_mul(v_load(y + j), v_sub(v_load(g + j), vd)));
        if (j < k) {
            VTM tm = v_tailmask(k - j);
            v_store_tail(o + j, tm, v_mul(v_load_tail(y + j, tm, (T)0),
                                          v_sub(v_load_tail(g + j, tm, (T)0), vd)));
        }
    }
}

static void FN(log_softmax_backward_rows)(const fa_args *A, int64_t r0, int64_t r1)
{
    const int64_t k = A->k;
    const unsigned char *M = A->mask;
    for (int64_t i = r0; i < r1; i++) {
        const T *g = (const T *)A->x + i * k;
        const T *y = (const T *)A->y + i * k;
        T *o = (T *)A->out + i * k;
        const unsigned char *mk = M ? M + i * k : NULL;
        double sum = 0.0;
        V s = v_zero();
        int64_t cnt = 0;
        for (int64_t j = 0; j < k; j += VL) {
            const int64_t n = k - j;
            V gv = n >= VL ? v_load(g + j) : v_load_tail(g + j, v_tailmask(n), (T)0);
            if (mk)
                gv = v_select(FN(sel_at)(mk, NULL, j, n), gv, v_zero());
            s = v_add(s, gv);
            if (++cnt == 64) {
                sum += v_hsum_d(s);
                s = v_zero();
                cnt = 0;
            }
        }
        sum += v_hsum_d(s);
        const V vs = v_set1((T)sum);
        for (int64_t j = 0; j < k; j += VL) {
            const int64_t n = k - j;
            V gv, yv;
            if (n >= VL) {
                gv = v_load(g + j);
                yv = v_load(y + j);
            } else {
                VTM tm = v_tailmask(n);
                gv = v_load_tail(g + j, tm, (T)0);
                yv = v_load_tail(y + j, tm, (T)0);
            }
            V r;
            if (mk) {
                VM sel = FN(sel_at)(mk, NULL, j, n);
                /* unselected lanes as exp(0) (-inf would take the exp's slow path), zeroed */
                r = v_sub(gv, v_mul(FN(vexp)(v_select(sel, yv, v_zero()), 1), vs));
                r = v_select(sel, r, v_zero());
            } else {
                r = v_sub(gv, v_mul(FN(vexp)(yv, 1), vs));
            }
            if (n >= VL)
                v_store(o + j, r);
            else
                v_store_tail(o + j, v_tailmask(n), r);
        }
    }
}
