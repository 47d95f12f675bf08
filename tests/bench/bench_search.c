/*  bench_search.c - FindContacts by phone and by fuzzy name on a million contacts, broker next to libpq.
 *
 *  Needs a running broker and contacts service (tests/bench/run.sh starts
 *  them) and the contacts DSN. Fills the contacts schema with a million
 *  generated customers unless it already holds that many, then looks up
 *  existing phones (typed in national and international formats) and
 *  existing names with one typo each, through the broker and through the
 *  very statement the service runs, on one libpq connection. Prints human
 *  lines and key=value lines. With CRM_TEST_DSN (a superuser DSN, as
 *  tests/lib/pg.sh exports it) a CHECKPOINT follows the load.
 */
#include "bench.h"
#include "crm.h"
#include "crm/v1/contacts.pb-c.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Contacts generated, and looked up per mode
#define S_CONTACTS 1000000
#define S_PHONES   5000
#define S_NAMES    200
//  Requests in flight for the phone throughput run
#define S_WINDOW 8
//  Results per page, as a search box shows them
#define S_PAGE_SIZE 20
//  The fuzzy runs stop after this long, whatever is left
#define S_FUZZY_CAP_S 150.0

#define S_STR_(x) #x
#define S_STR(x)  S_STR_ (x)

//  FindContacts as store.c prepares it
#define S_FIND_SQL                                                                                 \
    "SELECT contact_find2 ($1, $2, $3, $4, $5, $6::int, $7, $8::int, $9::uuid, $10::int)"

//  One looked-up customer: how it is stored and how a caller types it.
typedef struct {
    char number[24];  //  E.164, as stored
    char dialled[40]; //  The same number as a person might type it
    char given[128];  //  Given name, as stored
    char family[128]; //  Family name, as stored
    char fuzzy[272];  //  "given family" with one typo
    int cyrillic;     //  Whether the name is written in Cyrillic
} s_target_t;

//  What the answers to one mode held, by script (0 Latin, 1 Cyrillic).
typedef struct {
    int asked[2]; //  Answers
    int found[2]; //  Answers with at least one contact
    int right[2]; //  Answers whose first contact is the one meant
    int failed;   //  Errors and timeouts
} s_tally_t;

static const char *s_broker;
static const char *s_dsn;

//  The bulk load. Names from lists of given, middle and family names
//  (Latin and Cyrillic, women's forms of Slavic family names, patronymics),
//  picked with a skew so common names are common; phones by the country of
//  the branch, each part injective in a serial so numbers are unique; the
//  secondary indexes are dropped around the load and rebuilt from their own
//  definitions, as the migrations made them. The contact table's own triggers
//  (the name-word dictionary's) are off during the load, a row at a time being
//  what the load avoids; the dictionary is filled once afterwards.
static const char *s_generate_sql[] = {
    "SELECT setseed (0.4242)",
    "BEGIN",
    "CREATE TEMP TABLE bench_index ON COMMIT DROP AS "
    "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef (i.indexrelid) AS def "
    "FROM pg_index i "
    "WHERE i.indrelid IN ('contact'::regclass, 'contact_phone'::regclass, "
    "                     'contact_email'::regclass) "
    "  AND NOT i.indisprimary "
    "  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
    "DO $$ DECLARE r record; BEGIN "
    "FOR r IN SELECT name FROM bench_index LOOP EXECUTE 'DROP INDEX ' || r.name; END LOOP; "
    "END $$",
    "CREATE TEMP TABLE bench_trigger ON COMMIT DROP AS "
    "SELECT t.tgname AS name FROM pg_trigger t "
    "WHERE t.tgrelid = 'contact'::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D'",
    "DO $$ DECLARE r record; BEGIN "
    "FOR r IN SELECT name FROM bench_trigger LOOP "
    "EXECUTE format ('ALTER TABLE contact DISABLE TRIGGER %I', r.name); END LOOP; "
    "END $$",
    "CREATE TEMP TABLE bench_person ON COMMIT DROP AS "
    "WITH names AS (SELECT "
    "ARRAY['James','John','Robert','Michael','William','David','Richard','Joseph','Thomas',"
    "'Charles','Daniel','Matthew','Anthony','Mark','Steven','Paul','Andrew','Joshua','Kevin',"
    "'Brian','George','Edward','Peter','Henry','Oliver','Jack','Harry','Jacob','Noah','Lucas',"
    "'Liam','Ethan','Samuel','Benjamin','Alexander','Max','Felix','Jonas','Leon','Lukas','Jan',"
    "'Tobias','Niklas','Florian','Matthias','Stefan','Andris','Janis','Martins','Edgars',"
    "'Roberts','Jürgen','Jānis','Kārlis'] AS lm, "
    "ARRAY['Mary','Patricia','Jennifer','Linda','Elizabeth','Barbara','Susan','Jessica','Sarah',"
    "'Karen','Nancy','Lisa','Emily','Emma','Olivia','Sophia','Isabella','Charlotte','Amelia',"
    "'Mia','Harper','Evelyn','Abigail','Ella','Grace','Chloe','Lucy','Hannah','Anna','Laura',"
    "'Julia','Lena','Lea','Marie','Sophie','Katharina','Sandra','Claudia','Sabine','Petra',"
    "'Monika','Ilze','Liga','Inese','Kristine','Zane','Dace','Baiba','Agnese','Līga',"
    "'Jūlija'] AS lf, "
    "ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez',"
    "'Martinez','Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore',"
    "'Jackson','Martin','Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez',"
    "'Lewis','Robinson','Walker','Young','Allen','King','Wright','Scott','Torres','Nguyen',"
    "'Hill','Flores','Green','Adams','Nelson','Baker','Hall','Rivera','Campbell','Mitchell',"
    "'Carter','Roberts','Gomez','Phillips','Evans','Turner','Diaz','Parker','Cruz','Edwards',"
    "'Collins','Reyes','Stewart','Morris','Morales','Murphy','Cook','Rogers','Gutierrez',"
    "'Ortiz','Morgan','Cooper','Peterson','Bailey','Reed','Kelly','Howard','Ramos','Kim',"
    "'Cox','Ward','Richardson','Watson','Brooks','Chavez','Wood','James','Bennett','Gray',"
    "'Mendoza','Ruiz','Hughes','Price','Alvarez','Castillo','Sanders','Patel','Myers','Long',"
    "'Ross','Foster','Mueller','Schmidt','Schneider','Fischer','Weber','Meyer','Wagner',"
    "'Becker','Schulz','Hoffmann','Schaefer','Koch','Bauer','Richter','Klein','Wolf',"
    "'Schroeder','Neumann','Schwarz','Zimmermann','Braun','Krueger','Hofmann','Hartmann',"
    "'Lange','Schmitt','Werner','Schmitz','Krause','Meier','Lehmann','Schmid','Schulze',"
    "'Maier','Koehler','Herrmann','Koenig','Walter','Mayer','Huber','Kaiser','Fuchs',"
    "'Peters','Lang','Scholz','Moeller','Weiss','Jung','Hahn','Schubert','Berzins',"
    "'Kalnins','Ozolins','Jansons','Ozols','Liepins','Krumins','Balodis','Eglitis','Zarins',"
    "'Petersons','Vitols','Klavins','Karklins','Vanags','Müller','Schäfer','Krüger',"
    "'Bērziņš','Kalniņš','Ozoliņš','O''Brien','McCarthy','Fitzgerald','Gallagher','Doyle',"
    "'Kowalski','Nowak','Wiśniewski','Lewandowski','Dubois','Moreau','Laurent','Lefebvre',"
    "'Rossi','Russo','Ferrari','Esposito','Bianchi','Romano','Colombo','Ricci'] AS ll, "
    "ARRAY['Александр','Алексей','Андрей','Антон','Артём','Борис','Вадим','Валентин',"
    "'Василий','Виктор','Владимир','Владислав','Вячеслав','Геннадий','Георгий','Григорий',"
    "'Дмитрий','Денис','Евгений','Егор','Иван','Игорь','Илья','Кирилл','Константин','Леонид',"
    "'Максим','Михаил','Никита','Николай','Олег','Павел','Пётр','Роман','Сергей',"
    "'Станислав','Степан','Тимофей','Фёдор','Юрий','Ярослав','Богдан','Тарас'] AS cm, "
    "ARRAY['Александра','Алина','Алла','Анастасия','Анна','Валентина','Валерия','Вера',"
    "'Виктория','Галина','Дарья','Евгения','Екатерина','Елена','Елизавета','Жанна','Зоя',"
    "'Ирина','Ксения','Лариса','Любовь','Людмила','Маргарита','Марина','Мария','Надежда',"
    "'Наталья','Нина','Оксана','Ольга','Полина','Светлана','София','Тамара','Татьяна',"
    "'Ульяна','Юлия','Яна','Вероника','Кристина','Олеся'] AS cf, "
    "ARRAY['Александрович','Алексеевич','Андреевич','Антонович','Борисович','Вадимович',"
    "'Васильевич','Викторович','Владимирович','Геннадьевич','Георгиевич','Григорьевич',"
    "'Дмитриевич','Евгеньевич','Иванович','Игоревич','Кириллович','Константинович',"
    "'Леонидович','Максимович','Михайлович','Николаевич','Олегович','Павлович','Петрович',"
    "'Романович','Сергеевич','Степанович','Фёдорович','Юрьевич','Ярославович'] AS cp, "
    "ARRAY['Иванов','Смирнов','Кузнецов','Попов','Васильев','Петров','Соколов','Михайлов',"
    "'Новиков','Фёдоров','Морозов','Волков','Алексеев','Лебедев','Семёнов','Егоров',"
    "'Павлов','Козлов','Степанов','Николаев','Орлов','Андреев','Макаров','Никитин',"
    "'Захаров','Зайцев','Соловьёв','Борисов','Яковлев','Григорьев','Романов','Воробьёв',"
    "'Сергеев','Кузьмин','Фролов','Александров','Дмитриев','Королёв','Гусев','Киселёв',"
    "'Ильин','Максимов','Поляков','Сорокин','Виноградов','Ковалёв','Белов','Медведев',"
    "'Антонов','Тарасов','Жуков','Баранов','Филиппов','Комаров','Давыдов','Беляев',"
    "'Герасимов','Богданов','Осипов','Сидоров','Матвеев','Титов','Марков','Миронов',"
    "'Крылов','Куликов','Карпов','Власов','Мельников','Денисов','Гаврилов','Тихонов',"
    "'Казаков','Афанасьев','Данилов','Савельев','Тимофеев','Фомин','Чернов','Абрамов',"
    "'Мартынов','Ефимов','Федотов','Щербаков','Назаров','Калинин','Исаев','Чернышёв',"
    "'Быков','Маслов','Родионов','Коновалов','Лазарев','Воронин','Климов','Филатов',"
    "'Пономарёв','Голубев','Кудрявцев','Прохоров','Наумов','Потапов','Журавлёв',"
    "'Овчинников','Трофимов','Леонов','Соболев','Ермаков','Колесников','Гончаров',"
    "'Емельянов','Никифоров','Грачёв','Котов','Гришин','Ефремов','Архипов','Громов',"
    "'Кириллов','Малышев','Панов','Моисеев','Румянцев','Акимов','Кондратьев','Бирюков',"
    "'Горбунов','Анисимов','Третьяков','Калашников','Ковальский','Вишневский','Покровский',"
    "'Успенский','Преображенский','Архангельский','Троицкий','Шевченко','Коваленко',"
    "'Бондаренко','Ткаченко','Кравченко','Олейник','Мельник','Шевчук','Бойко','Коваль',"
    "'Лысенко','Марченко','Руденко','Савченко','Петренко','Клименко','Павленко','Кравец',"
    "'Ткачук','Мороз'] AS cl, "
    "ARRAY['riga-1','riga-2','berlin-1','berlin-2','london-1','boston-1','boston-2','nyc-1',"
    "'moscow-1','moscow-2','kyiv-1'] AS branches, "
    "ARRAY['riga-1','riga-2','moscow-1','moscow-2','kyiv-1','berlin-1'] AS slavic_branches, "
    "ARRAY['gmail.com','outlook.com','yahoo.com','icloud.com','web.de','gmx.de','inbox.lv',"
    "'mail.ru','yandex.ru','ukr.net','proton.me'] AS domains, "
    "ARRAY['617','857','212','646','718','917','347','508','781','978'] AS us_areas), "
    "raw AS (SELECT i, random () < 0.4 AS cyr, random () < 0.5 AS female, "
    "        power (random (), 1.5) AS rg, power (random (), 1.3) AS rf, random () AS rm, "
    "        random () AS rp, random () AS rb, random () AS rd, random () AS re, "
    "        random () AS ry "
    "        FROM generate_series (1, " S_STR (
        S_CONTACTS) ") i OFFSET 0) "
                    "SELECT r.i, gen_random_uuid () AS id, r.cyr, r.female, r.rd, r.re, r.ry, "
                    "  CASE WHEN r.cyr THEN n.slavic_branches[1 + (r.rb * 60)::int % 6] "
                    "       ELSE n.branches[1 + (r.rb * 110)::int % 11] END AS branch, "
                    "  CASE WHEN r.cyr AND r.female THEN n.cf[1 + (r.rg * 41)::int % 41] "
                    "       WHEN r.cyr THEN n.cm[1 + (r.rg * 43)::int % 43] "
                    "       WHEN r.female THEN n.lf[1 + (r.rg * 51)::int % 51] "
                    "       ELSE n.lm[1 + (r.rg * 54)::int % 54] END AS given, "
                    "  CASE WHEN r.cyr AND r.rm < 0.85 AND r.female "
                    "            THEN regexp_replace (n.cp[1 + (r.rp * 31)::int % 31], 'ич$', "
                    "'на') "
                    "       WHEN r.cyr AND r.rm < 0.85 THEN n.cp[1 + (r.rp * 31)::int % 31] "
                    "       WHEN r.rm < 0.25 AND r.female THEN n.lf[1 + (r.rp * 51)::int % 51] "
                    "       WHEN r.rm < 0.25 THEN n.lm[1 + (r.rp * 54)::int % 54] "
                    "       ELSE '' END AS middle, "
                    "  CASE WHEN r.cyr THEN n.cl[1 + (r.rf * array_length (n.cl, 1))::int "
                    "                             % array_length (n.cl, 1)] "
                    "       ELSE n.ll[1 + (r.rf * array_length (n.ll, 1))::int % array_length "
                    "(n.ll, 1)] "
                    "  END AS family, "
                    "  n.domains[1 + (r.re * 1000)::int % 11] AS domain, "
                    "  n.us_areas[1 + (r.rp * 1000)::int % 10] AS us_area "
                    "FROM raw r, names n",
    "UPDATE bench_person SET family = "
    "  CASE WHEN family ~ '(ов|ев|ёв|ин|ын)$' THEN family || 'а' "
    "       WHEN family ~ 'ий$' THEN regexp_replace (family, 'ий$', 'ая') "
    "       ELSE family END "
    "WHERE cyr AND female",
    "INSERT INTO contact (id, branch, given_name, middle_name, family_name, preferred_address, "
    "                     first_name_allowed, birthday, created_at, updated_at, company, tags) "
    "SELECT id, branch, given, middle, family, "
    "  CASE WHEN cyr AND middle <> '' THEN given || ' ' || middle "
    "       WHEN NOT cyr AND rd < 0.5 THEN CASE WHEN female THEN 'Ms. ' ELSE 'Mr. ' END "
    "                                      || family "
    "       ELSE given END, "
    "  rd < 0.6, "
    "  CASE WHEN ry < 0.85 THEN date '1940-01-01' + (ry / 0.85 * 365 * 65)::int END, "
    "  now () - (rd * 2000 || ' days')::interval, now () - (rd * 1000 || ' days')::interval, "
    "  CASE WHEN re < 0.15 THEN (ARRAY['Acme GmbH','Northwind','SIA Baltic Trade',"
    "       'ООО Ромашка','Globex','Initech'])[1 + (re * 100)::int % 6] ELSE '' END, "
    "  CASE WHEN rd < 0.2 THEN ARRAY[(ARRAY['vip','wholesale','newsletter','coffee',"
    "       'loyal'])[1 + (rd * 100)::int % 5]] ELSE '{}' END "
    "FROM bench_person",
    "INSERT INTO contact_phone (contact_id, position, number, label, is_primary) "
    "SELECT p.id, k.position, "
    "  CASE split_part (p.branch, '-', 1) "
    "    WHEN 'riga' THEN '+3712' || lpad (((k.serial * 2654435761) % 10000000)::text, 7, '0') "
    "    WHEN 'berlin' THEN '+49' || (ARRAY['151','160','170','171','176','177','179'])"
    "                               [1 + k.serial % 7] "
    "                     || lpad (((k.serial * 2654435761) % 100000000)::text, 8, '0') "
    "    WHEN 'london' THEN '+447' || lpad ((k.serial % 97)::text, 2, '0') "
    "                     || lpad (((k.serial * 2654435761) % 10000000)::text, 7, '0') "
    "    WHEN 'moscow' THEN '+79' || (10 + k.serial % 89)::text "
    "                     || lpad (((k.serial * 2654435761) % 10000000)::text, 7, '0') "
    "    WHEN 'kyiv' THEN '+380' || (ARRAY['50','63','66','67','68','73','93','95','97','99'])"
    "                               [1 + k.serial % 10] "
    "                     || lpad (((k.serial * 2654435761) % 10000000)::text, 7, '0') "
    "    ELSE '+1' || p.us_area || (2000000 + (k.serial * 2654435761) % 8000000)::text END, "
    "  CASE k.position WHEN 1 THEN 'mobile' ELSE (ARRAY['home','work'])[1 + k.serial % 2] END, "
    "  k.position = 1 "
    "FROM bench_person p "
    "CROSS JOIN LATERAL (VALUES (1, p.i::bigint), "
    "                           (2, " S_STR (S_CONTACTS) " + p.i::bigint)) k (position, serial) "
                                                         "WHERE k.position = 1 OR p.re > 0.75",
    "INSERT INTO contact_email (contact_id, position, address, label, is_primary) "
    "SELECT id, 1, lower (translate (given || CASE WHEN rd < 0.5 THEN '.' ELSE '_' END "
    "                                || family, "
    "  'АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЫЭЮЯабвгдеёжзийклмнопрстуфхцчшщыэюя"
    "āēīūčšžņļģķĀĒĪŪČŠŽŅĻĢĶüäöÜÄÖśŚ''ъьЪЬ', "
    "  'ABVGDEEZZIJKLMNOPRSTUFHCCSSYEUAabvgdeezzijklmnoprstufhccssyeua"
    "aeiucsznlgkAEIUCSZNLGKuaoUAOsS')) || i || '@' || domain, 'personal', true "
    "FROM bench_person WHERE re < 0.7",
    "DO $$ DECLARE r record; BEGIN "
    "FOR r IN SELECT def FROM bench_index LOOP EXECUTE r.def; END LOOP; "
    "END $$",
    "DO $$ DECLARE r record; BEGIN "
    "FOR r IN SELECT name FROM bench_trigger LOOP "
    "EXECUTE format ('ALTER TABLE contact ENABLE TRIGGER %I', r.name); END LOOP; "
    "END $$",
    "SELECT contact_name_words_fill ()",
    "COMMIT",
    //  Hint bits and the visibility map set now, not by autovacuum in the middle of the run
    "VACUUM (ANALYZE) contact, contact_phone, contact_email, contact_name_word",
};

static void
s_percentiles (int64_t *latencies, int n, double *p50, double *p99)
{
    qsort (latencies, (size_t) n, sizeof *latencies, s_cmp_i64);
    *p50 = n ? latencies[n / 2] / 1000.0 : 0;
    *p99 = n ? latencies[(int) (n * 0.99)] / 1000.0 : 0;
}

//  Runs one statement; -1 with the server's message on stderr if it failed.
static int
s_exec (PGconn *conn, const char *sql)
{
    PGresult *res = PQexec (conn, sql);
    ExecStatusType status = PQresultStatus (res);
    int rc = status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ? 0 : -1;
    if (rc)
        fprintf (stderr, "bench: could not run \"%.60s...\": %s", sql, PQresultErrorMessage (res));
    PQclear (res);
    return rc;
}

//  Fills the schema up to a million contacts, unless a previous run did;
//  returns the seconds it took (0 when reused), -1 on failure.
static double
s_generate (PGconn *conn)
{
    PGresult *res = PQexec (conn, "SELECT count(*) FROM contact WHERE branch <> 'bench'");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        fprintf (stderr, "bench: could not count contacts: %s", PQresultErrorMessage (res));
        PQclear (res);
        return -1;
    }
    long held = atol (PQgetvalue (res, 0, 0));
    PQclear (res);
    if (held >= S_CONTACTS) {
        printf ("reusing the %ld contacts already in the schema\n", held);
        //  Migrations fill the name-word dictionary from the contacts they find,
        //  and the load below fills it too: empty only if something emptied it
        return s_exec (conn, "SELECT contact_name_words_fill () "
                             "WHERE NOT EXISTS (SELECT 1 FROM contact_name_word)") == 0
                   ? 0
                   : -1;
    }
    double start = s_now_s ();
    for (size_t i = 0; i < sizeof s_generate_sql / sizeof *s_generate_sql; i++)
        if (s_exec (conn, s_generate_sql[i]) != 0) {
            PQclear (PQexec (conn, "ROLLBACK"));
            return -1;
        }
    //  The load wrote a gigabyte of WAL: its checkpoint would otherwise be
    //  flushing during the measurements (and the benchmarks after these)
    const char *superuser = getenv ("CRM_TEST_DSN");
    if (superuser && *superuser) {
        PGconn *admin = PQconnectdb (superuser);
        if (PQstatus (admin) == CONNECTION_OK)
            s_exec (admin, "CHECKPOINT");
        PQfinish (admin);
    }
    return s_now_s () - start;
}

//  The E.164 number as a person might type it: national with the default
//  calling code (+1), or international with "+" or "00", grouped.
static void
s_dialled (const char *e164, int variant, char *out, size_t outlen)
{
    static const char *codes[] = {"380", "371", "44", "49", "1", "7"};
    const char *code = "";
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++)
        if (strncmp (e164 + 1, codes[i], strlen (codes[i])) == 0) {
            code = codes[i];
            break;
        }
    const char *rest = e164 + 1 + strlen (code);
    size_t n = strlen (rest);
    //  National forms only for +1: the service reads them with its default
    //  calling code, the benchmark's branch having none of its own
    if (strcmp (code, "1") == 0 && n == 10 && variant % 4 != 3) {
        const char *forms[] = {"(%.3s) %.3s-%s", "%.3s-%.3s-%s", "%.3s.%.3s.%s"};
        snprintf (out, outlen, forms[variant % 4], rest, rest + 3, rest + 6);
    }
    else if (n > 6 && variant % 2 == 0)
        snprintf (out, outlen, "+%s %.3s %.3s %s", code, rest, rest + 3, rest + 6);
    else if (n > 6)
        snprintf (out, outlen, "00%s %.3s-%s", code, rest, rest + 3);
    else
        snprintf (out, outlen, "%s", e164);
}

//  Byte offsets of the characters of a UTF-8 string, ending with its length;
//  returns how many characters.
static int
s_utf8_offsets (const char *text, int *offsets, int max)
{
    int n = 0, i = 0;
    for (; text[i] && n < max; i++)
        if (((unsigned char) text[i] & 0xC0) != 0x80)
            offsets[n++] = i;
    while (text[i])
        i++;
    offsets[n] = i;
    return n;
}

//  name with one typo: two neighbouring letters swapped, or one left out;
//  never the first letter, which people seldom get wrong.
static void
s_typo (const char *name, unsigned seed, char *out, size_t outlen)
{
    int at[129];
    int n = s_utf8_offsets (name, at, 128);
    if (n < 3) {
        snprintf (out, outlen, "%s", name);
        return;
    }
    int k = 1 + (int) (seed % (unsigned) (n - 2));
    int first = at[k + 1] - at[k], second = at[k + 2] - at[k + 1];
    int same = first == second && memcmp (name + at[k], name + at[k + 1], (size_t) first) == 0;
    if (seed / 7 % 2 == 0 && !same)
        snprintf (out, outlen, "%.*s%.*s%.*s%s", at[k], name, second, name + at[k + 1], first,
                  name + at[k], name + at[k + 2]);
    else
        snprintf (out, outlen, "%.*s%s", at[k], name, name + at[k + 1]);
}

//  Requests per second over two runs of n1 and n2 requests at rate1 and rate2.
static double
s_combined_rate (int n1, double rate1, int n2, double rate2)
{
    return rate1 > 0 && rate2 > 0 ? (n1 + n2) / (n1 / rate1 + n2 / rate2) : 0;
}

//  Existing phones and names of generated contacts, in a repeatable order.
static int
s_targets (PGconn *conn, s_target_t *targets, int count)
{
    PGresult *res =
        PQexec (conn, "SELECT p.number, c.given_name, c.family_name, c.given_name ~ '[А-Яа-яЁё]' "
                      "FROM contact c TABLESAMPLE BERNOULLI (1) REPEATABLE (7) "
                      "JOIN contact_phone p ON p.contact_id = c.id "
                      "WHERE c.branch <> 'bench' AND c.merged_into IS NULL AND c.erased_at IS NULL "
                      "ORDER BY md5 (p.number) LIMIT " S_STR (S_PHONES));
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        fprintf (stderr, "bench: could not pick contacts: %s", PQresultErrorMessage (res));
        PQclear (res);
        return -1;
    }
    int rows = PQntuples (res) < count ? PQntuples (res) : count;
    for (int i = 0; i < rows; i++) {
        s_target_t *target = &targets[i];
        snprintf (target->number, sizeof target->number, "%s", PQgetvalue (res, i, 0));
        snprintf (target->given, sizeof target->given, "%s", PQgetvalue (res, i, 1));
        snprintf (target->family, sizeof target->family, "%s", PQgetvalue (res, i, 2));
        target->cyrillic = *PQgetvalue (res, i, 3) == 't';
        s_dialled (target->number, i, target->dialled, sizeof target->dialled);
        char given[128], family[128];
        unsigned seed = (unsigned) i * 2654435761u;
        snprintf (given, sizeof given, "%s", target->given);
        snprintf (family, sizeof family, "%s", target->family);
        if (seed % 3 == 0)
            s_typo (target->given, seed / 3, given, sizeof given);
        else
            s_typo (target->family, seed / 3, family, sizeof family);
        snprintf (target->fuzzy, sizeof target->fuzzy, "%s %s", given, family);
    }
    PQclear (res);
    return rows;
}

//  A FindContacts request by phone or by fuzzy name; the request id ends
//  in i so a reply can be matched to its send time.
static zmsg_t *
s_request (const char *run, const char *mode, int i, const s_target_t *target)
{
    char request_id[64];
    snprintf (request_id, sizeof request_id, "%s-%s-%d", run, mode, i);
    Crm__V1__RequestMeta meta = CRM__V1__REQUEST_META__INIT;
    meta.request_id = request_id;
    meta.branch = "bench";
    Crm__V1__PageRequest page = CRM__V1__PAGE_REQUEST__INIT;
    page.page_size = S_PAGE_SIZE;
    Crm__V1__FindContactsRequest find = CRM__V1__FIND_CONTACTS_REQUEST__INIT;
    find.page = &page;
    if (strcmp (mode, "fuzzy") == 0)
        find.fuzzy_name = (char *) (uintptr_t) target->fuzzy;
    else if (strcmp (mode, "bare") == 0)
        find.phone = "no number"; //  Refused by the service before any SQL
    else
        find.phone = (char *) (uintptr_t) target->dialled;
    return crm_proto_request_new ("FindContacts", &meta, &find.base);
}

//  Counts what one answer held: a contact at all, and the one meant first
//  (numbers: the first contact's phones, space-separated).
static void
s_tally (s_tally_t *tally, int found, const char *numbers, const char *given, const char *family,
         const s_target_t *target, int fuzzy)
{
    int script = target->cyrillic;
    tally->asked[script]++;
    if (!found)
        return;
    tally->found[script]++;
    if (fuzzy ? strcmp (given, target->given) == 0 && strcmp (family, target->family) == 0
              : strstr (numbers, target->number) != NULL)
        tally->right[script]++;
}

//  Index i of a reply's request id "<run>-<mode>-<i>", -1 on error; tallies
//  what the reply held. In mode bare the expected answer is a refusal.
static int
s_reply (zmsg_t *reply, const s_target_t *targets, int count, const char *mode, s_tally_t *tally)
{
    Crm__V1__Status *status;
    zframe_t *payload;
    if (crm_proto_reply_parse (reply, &status, &payload) != 0)
        return -1;
    int index = -1, fuzzy = strcmp (mode, "fuzzy") == 0;
    if (strcmp (mode, "bare") == 0 &&
        status->code == CRM__V1__STATUS_CODE__STATUS_INVALID_ARGUMENT) {
        const char *dash = strrchr (status->request_id, '-');
        index = dash ? atoi (dash + 1) : -1;
    }
    else if (status->code == 0) {
        const char *dash = strrchr (status->request_id, '-');
        index = dash ? atoi (dash + 1) : -1;
        Crm__V1__FindContactsResponse *found = crm__v1__find_contacts_response__unpack (
            NULL, zframe_size (payload), zframe_data (payload));
        if (!found)
            index = -1;
        else if (index >= 0 && index < count) {
            Crm__V1__Contact *first = found->n_contacts ? found->contacts[0] : NULL;
            char numbers[256] = "";
            for (size_t i = 0; first && i < first->n_phones && i < 8; i++)
                snprintf (numbers + strlen (numbers), sizeof numbers - strlen (numbers), "%s ",
                          first->phones[i]->number);
            s_tally (tally, first != NULL, numbers, first ? first->given_name : "",
                     first ? first->family_name : "", &targets[index], fuzzy);
        }
        if (found)
            crm__v1__find_contacts_response__free_unpacked (found, NULL);
    }
    else
        fprintf (stderr, "bench: %s: %s\n", crm_status_name (status->code), status->message);
    crm__v1__status__free_unpacked (status, NULL);
    return index;
}

//  FindContacts for targets first..first+count through the broker, keeping
//  window requests in flight (1: one at a time), until all are answered or
//  cap_s passes. latencies[i] gets the time of targets[i] in us, -1 when it
//  had no answer; returns requests answered per second.
static double
s_broker_run (const char *run, const char *mode, const s_target_t *targets, int first, int count,
              int window, double cap_s, int64_t *latencies, s_tally_t *tally)
{
    crm_mdp_client_t *client = crm_mdp_client_new (s_broker);
    int64_t *sent_at = calloc ((size_t) (first + count), sizeof *sent_at);
    int sent = first, answered = 0, failed = 0;
    for (int i = first; i < first + count; i++)
        latencies[i] = -1;
    double start = s_now_s ();
    while (answered + failed < count) {
        while (sent < first + count && sent - first - answered - failed < window &&
               s_now_s () - start < cap_s) {
            zmsg_t *body = s_request (run, mode, sent, &targets[sent]);
            sent_at[sent] = s_now_us ();
            crm_mdp_client_send (client, "contacts", &body);
            sent++;
        }
        if (sent - first == answered + failed)
            break; //  The time cap stopped sending
        zmsg_t *reply = crm_mdp_client_recv (client, NULL, 10000);
        if (!reply) {
            fprintf (stderr, "bench: no reply within 10 s (%d of %d answered)\n", answered, count);
            failed = sent - first - answered;
            break;
        }
        int index = s_reply (reply, targets, first + count, mode, tally);
        zmsg_destroy (&reply);
        if (index < first || index >= sent) {
            //  Every request failing is no measurement: say so and stop
            if (++failed >= 20 && failed > answered) {
                fprintf (stderr, "bench: %d of %d %s requests failed, giving up\n", failed,
                         sent - first, mode);
                failed = count - answered;
                break;
            }
        }
        else {
            latencies[index] = s_now_us () - sent_at[index];
            answered++;
        }
    }
    double rate = answered / (s_now_s () - start);
    tally->failed += failed;
    free (sent_at);
    crm_mdp_client_destroy (&client);
    return rate;
}

//  The same statement through libpq, one at a time on one connection; as
//  s_broker_run.
static double
s_libpq_run (PGconn *conn, const char *mode, const s_target_t *targets, int first, int count,
             double cap_s, int64_t *latencies, s_tally_t *tally)
{
    int fuzzy = strcmp (mode, "fuzzy") == 0;
    int answered = 0;
    for (int i = first; i < first + count; i++)
        latencies[i] = -1;
    double start = s_now_s ();
    for (int i = first; i < first + count && s_now_s () - start < cap_s; i++) {
        const char *values[10] = {NULL};
        //  The service hands the statement a number already in E.164
        if (fuzzy)
            values[3] = targets[i].fuzzy;
        else
            values[0] = targets[i].number;
        values[7] = S_STR (S_PAGE_SIZE);
        values[9] = "0";
        int64_t sent_at = s_now_us ();
        PGresult *res = PQexecPrepared (conn, "find", 10, values, NULL, NULL, 0);
        int64_t took = s_now_us () - sent_at;
        if (PQresultStatus (res) != PGRES_TUPLES_OK || PQntuples (res) != 1) {
            fprintf (stderr, "bench: %s", PQresultErrorMessage (res));
            tally->failed++;
            PQclear (res);
            continue;
        }
        latencies[i] = took;
        answered++;
        json_t *reply = json_loads (PQgetvalue (res, 0, 0), 0, NULL);
        json_t *contact =
            json_array_get (json_object_get (json_object_get (reply, "response"), "contacts"), 0);
        char numbers[256] = "";
        json_t *phones = json_object_get (contact, "phones");
        for (size_t k = 0; k < json_array_size (phones) && k < 8; k++) {
            const char *number =
                json_string_value (json_object_get (json_array_get (phones, k), "number"));
            snprintf (numbers + strlen (numbers), sizeof numbers - strlen (numbers), "%s ",
                      number ? number : "");
        }
        const char *given = json_string_value (json_object_get (contact, "givenName"));
        const char *family = json_string_value (json_object_get (contact, "familyName"));
        s_tally (tally, contact != NULL, numbers, given ? given : "", family ? family : "",
                 &targets[i], fuzzy);
        json_decref (reply);
        PQclear (res);
    }
    return answered / (s_now_s () - start);
}

//  p50 and p99 of the answered entries of latencies, all of them (script
//  -1) or those of one script; returns how many there were.
static int
s_summary (const s_target_t *targets, const int64_t *latencies, int n, int script, double *p50,
           double *p99)
{
    int64_t *kept = calloc ((size_t) n + 1, sizeof *kept);
    int count = 0;
    for (int i = 0; i < n; i++)
        if (latencies[i] >= 0 && (script < 0 || targets[i].cyrillic == script))
            kept[count++] = latencies[i];
    s_percentiles (kept, count, p50, p99);
    free (kept);
    return count;
}

int
main (int argc, char **argv)
{
    zsys_handler_set (NULL);
    if (argc < 3) {
        fprintf (stderr, "usage: bench_search BROKER_ENDPOINT CONTACTS_DSN\n");
        return 64;
    }
    s_broker = argv[1];
    s_dsn = argv[2];
    //  Minutes pass between lines: show each as it comes, even into a pipe
    setvbuf (stdout, NULL, _IOLBF, 0);
    crm_log_init ("bench", NULL, "warn", "text");
    char run[16];
    snprintf (run, sizeof run, "%02d%02d", (int) (crm_now_ms () / 1000 % 100),
              (int) (getpid () % 100));

    PGconn *conn = PQconnectdb (s_dsn);
    if (PQstatus (conn) != CONNECTION_OK) {
        fprintf (stderr, "bench: could not connect: %s", PQerrorMessage (conn));
        PQfinish (conn);
        return 1;
    }
    //  temp_buffers only counts before the session's first temporary table
    if (s_exec (conn, "SET search_path TO contacts") != 0 ||
        s_exec (conn, "SET maintenance_work_mem = '512MB'") != 0 ||
        s_exec (conn, "SET temp_buffers = '256MB'") != 0) {
        PQfinish (conn);
        return 1;
    }
    double generated_s = s_generate (conn);
    if (generated_s < 0) {
        PQfinish (conn);
        return 1;
    }
    if (generated_s > 0) {
        PGresult *res = PQexec (conn, "SELECT (SELECT count(*) FROM contact), "
                                      "(SELECT count(*) FROM contact_phone), "
                                      "(SELECT count(*) FROM contact_email)");
        printf ("generated %d contacts in %.1f s, analysed and vacuumed (now %s contacts, %s "
                "phones, %s emails)\n",
                S_CONTACTS, generated_s, PQgetvalue (res, 0, 0), PQgetvalue (res, 0, 1),
                PQgetvalue (res, 0, 2));
        PQclear (res);
    }
    printf ("search_generate_s=%.1f\n", generated_s);

    s_target_t *targets = calloc (S_PHONES, sizeof *targets);
    int64_t *broker_us = calloc (S_PHONES, sizeof *broker_us);
    int64_t *libpq_us = calloc (S_PHONES, sizeof *libpq_us);
    int64_t *window_us = calloc (S_PHONES, sizeof *window_us);
    int64_t *bare_us = calloc (S_PHONES, sizeof *bare_us);
    int count = s_targets (conn, targets, S_PHONES);
    PGresult *prepared = PQprepare (conn, "find", S_FIND_SQL, 10, NULL);
    PQclear (prepared);
    if (count < S_NAMES) {
        fprintf (stderr, "bench: only %d contacts to look up\n", count);
        count = -1;
        goto cleanup;
    }

    //  By phone: the numbers as typed, one at a time, through the broker and
    //  through libpq; then a few in flight for throughput. Whichever path asks
    //  for a number second finds its pages in the server's cache, so each path
    //  goes first for one half of the numbers
    s_tally_t phone = {0}, phone_sql = {0}, phone_window = {0};
    double p50, p99, sql_p50, sql_p99, w_p50, w_p99;
    int phone_half = count / 2;
    double rate1 = s_broker_run (run, "phone", targets, 0, phone_half, 1, 1e9, broker_us, &phone);
    double sql_rate1 =
        s_libpq_run (conn, "phone", targets, 0, phone_half, 1e9, libpq_us, &phone_sql);
    double sql_rate2 = s_libpq_run (conn, "phone", targets, phone_half, count - phone_half, 1e9,
                                    libpq_us, &phone_sql);
    double rate2 = s_broker_run (run, "phone", targets, phone_half, count - phone_half, 1, 1e9,
                                 broker_us, &phone);
    double rate = s_combined_rate (phone_half, rate1, count - phone_half, rate2);
    double sql_rate = s_combined_rate (phone_half, sql_rate1, count - phone_half, sql_rate2);
    double w_rate =
        s_broker_run (run, "phonew", targets, 0, count, S_WINDOW, 1e9, window_us, &phone_window);
    //  The same round trips with no database work: what broker and service add
    double bare_p50, bare_p99;
    s_tally_t bare = {0};
    s_broker_run (run, "bare", targets, 0, count, 1, 1e9, bare_us, &bare);
    s_summary (targets, bare_us, count, -1, &bare_p50, &bare_p99);
    int n = s_summary (targets, broker_us, count, -1, &p50, &p99);
    s_summary (targets, libpq_us, count, -1, &sql_p50, &sql_p99);
    s_summary (targets, window_us, count, -1, &w_p50, &w_p99);
    printf ("FindContacts by phone, %d existing numbers as typed (national and international "
            "formats): %d found, %d right, %d failed\n",
            n, phone.found[0] + phone.found[1], phone.right[0] + phone.right[1],
            phone.failed + phone_sql.failed + phone_window.failed);
    printf ("  via broker, one at a time: p50 %.2f ms, p99 %.2f ms, %.0f/s\n", p50, p99, rate);
    printf ("  libpq, same statement:     p50 %.2f ms, p99 %.2f ms, %.0f/s; "
            "ratio broker/libpq p50 %.2f, p99 %.2f\n",
            sql_p50, sql_p99, sql_rate, sql_p50 ? p50 / sql_p50 : 0, sql_p99 ? p99 / sql_p99 : 0);
    printf ("  via broker, %d in flight:   p50 %.2f ms, p99 %.2f ms, %.0f/s\n", S_WINDOW, w_p50,
            w_p99, w_rate);
    printf ("  broker and service alone (a number refused before any SQL): p50 %.2f ms, "
            "p99 %.2f ms\n",
            bare_p50, bare_p99);
    printf ("  target p99 under 2 ms through the broker: %s\n", p99 < 2 ? "met" : "missed");
    printf ("search_phone_p50_ms=%.2f\nsearch_phone_p99_ms=%.2f\nsearch_phone_rate=%.0f\n"
            "search_phone_sql_p50_ms=%.2f\nsearch_phone_sql_p99_ms=%.2f\n"
            "search_phone_window_p50_ms=%.2f\nsearch_phone_window_p99_ms=%.2f\n"
            "search_phone_window_rate=%.0f\nsearch_bare_p50_ms=%.2f\nsearch_bare_p99_ms=%.2f\n",
            p50, p99, rate, sql_p50, sql_p99, w_p50, w_p99, w_rate, bare_p50, bare_p99);

    //  By fuzzy name, one at a time. Whichever path runs a name second finds
    //  its pages in shared buffers, so each path goes first for half of them
    s_tally_t fuzzy = {0}, fuzzy_sql = {0};
    int half = S_NAMES / 2;
    s_broker_run (run, "fuzzy", targets, 0, half, 1, S_FUZZY_CAP_S / 4, broker_us, &fuzzy);
    s_libpq_run (conn, "fuzzy", targets, 0, half, S_FUZZY_CAP_S / 4, libpq_us, &fuzzy_sql);
    s_libpq_run (conn, "fuzzy", targets, half, half, S_FUZZY_CAP_S / 4, libpq_us, &fuzzy_sql);
    s_broker_run (run, "fuzzy", targets, half, half, 1, S_FUZZY_CAP_S / 4, broker_us, &fuzzy);
    double lat_p50, lat_p99, cyr_p50, cyr_p99, sql_lat_p50, sql_lat_p99, sql_cyr_p50, sql_cyr_p99;
    n = s_summary (targets, broker_us, S_NAMES, -1, &p50, &p99);
    int n_sql = s_summary (targets, libpq_us, S_NAMES, -1, &sql_p50, &sql_p99);
    int latin = s_summary (targets, broker_us, S_NAMES, 0, &lat_p50, &lat_p99);
    int cyrillic = s_summary (targets, broker_us, S_NAMES, 1, &cyr_p50, &cyr_p99);
    s_summary (targets, libpq_us, S_NAMES, 0, &sql_lat_p50, &sql_lat_p99);
    s_summary (targets, libpq_us, S_NAMES, 1, &sql_cyr_p50, &sql_cyr_p99);
    printf ("FindContacts by fuzzy name, %d existing names with one typo (%d Latin, %d Cyrillic), "
            "pages of %d; %d failed\n",
            n, latin, cyrillic, S_PAGE_SIZE, fuzzy.failed + fuzzy_sql.failed);
    printf ("  via broker, one at a time: p50 %.1f ms, p99 %.1f ms (Latin p50 %.1f, p99 %.1f; "
            "Cyrillic p50 %.1f, p99 %.1f)\n",
            p50, p99, lat_p50, lat_p99, cyr_p50, cyr_p99);
    printf ("  libpq, same statement:     p50 %.1f ms, p99 %.1f ms (Latin p50 %.1f, p99 %.1f; "
            "Cyrillic p50 %.1f, p99 %.1f); %d run; ratio broker/libpq p50 %.2f, p99 %.2f\n",
            sql_p50, sql_p99, sql_lat_p50, sql_lat_p99, sql_cyr_p50, sql_cyr_p99, n_sql,
            sql_p50 ? p50 / sql_p50 : 0, sql_p99 ? p99 / sql_p99 : 0);
    printf ("  meant person first: Latin %d of %d, Cyrillic %d of %d; nothing found: Latin %d, "
            "Cyrillic %d\n",
            fuzzy.right[0], fuzzy.asked[0], fuzzy.right[1], fuzzy.asked[1],
            fuzzy.asked[0] - fuzzy.found[0], fuzzy.asked[1] - fuzzy.found[1]);
    printf ("  target p99 under 50 ms: %s\n", p99 < 50 ? "met" : "missed");
    printf ("search_fuzzy_p50_ms=%.1f\nsearch_fuzzy_p99_ms=%.1f\nsearch_fuzzy_sql_p50_ms=%.1f\n"
            "search_fuzzy_sql_p99_ms=%.1f\nsearch_fuzzy_latin_p99_ms=%.1f\n"
            "search_fuzzy_cyrillic_p99_ms=%.1f\nsearch_fuzzy_latin_first_right=%d/%d\n"
            "search_fuzzy_cyrillic_found=%d/%d\n",
            p50, p99, sql_p50, sql_p99, lat_p99, cyr_p99, fuzzy.right[0], fuzzy.asked[0],
            fuzzy.found[1], fuzzy.asked[1]);

cleanup:
    PQfinish (conn);
    free (bare_us);
    free (window_us);
    free (libpq_us);
    free (broker_us);
    free (targets);
    return count < 0;
}
