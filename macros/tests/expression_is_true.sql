{#- Rows for which a boolean SQL expression does not hold (optionally only where `condition`). -#}
{% test expression_is_true(model, expression, condition='true') %}
    select *
    from {{ model }}
    where ({{ condition }}) and not ({{ expression }})
{% endtest %}
