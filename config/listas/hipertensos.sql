-- Lista nominal: pessoas com hipertensão arterial (CID-10 I10-I15, CIAP-2 K86/K87),
-- com a última consulta, o número de consultas e a equipe e unidade de vinculação.
SELECT c.co_seq_fat_cidadao_pec,
       c.no_cidadao,
       c.nu_cns,
       c.nu_cpf_cidadao,
       c.dt_nascimento,
       e.nu_ine AS nu_ine_equipe,
       e.no_equipe,
       u.nu_cnes,
       max(t.dt_registro) AS dt_ultima_consulta,
       count(*) AS nu_consultas
FROM tb_fat_cidadao_pec c
JOIN tb_fat_atendimento_individual a ON a.co_fat_cidadao_pec = c.co_seq_fat_cidadao_pec
JOIN tb_dim_tempo t ON t.co_seq_dim_tempo = a.co_dim_tempo
LEFT JOIN tb_dim_equipe e ON e.co_seq_dim_equipe = c.co_dim_equipe_vinc
LEFT JOIN tb_dim_unidade_saude u ON u.co_seq_dim_unidade_saude = c.co_dim_unidade_saude_vinc
WHERE (a.ds_filtro_cids ~ '\|I1[0-5][0-9]?\|' OR a.ds_filtro_ciaps ~ '\|K8[67]\|')
  AND a.co_dim_tempo <> 30001231  -- 30001231: data não informada
  AND coalesce(c.st_faleceu, 0) = 0
GROUP BY c.co_seq_fat_cidadao_pec, c.no_cidadao, c.nu_cns, c.nu_cpf_cidadao, c.dt_nascimento,
         e.nu_ine, e.no_equipe, u.nu_cnes
