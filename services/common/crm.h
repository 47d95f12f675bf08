/*  crm.h - libcrm, the shared library of the suite: one include for all of it. */
#ifndef CRM_H_INCLUDED
#define CRM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crm_config.h"
#include "crm_log.h"
#include "crm_util.h"
#include "crm_zwatch.h"
#include "crm_mdp.h"
#include "crm_json.h"
#include "crm_proto.h"
#include "crm_pg.h"
#include "crm_migrate.h"
#include "crm_idem.h"
#include "crm_service.h"
#include "crm_events.h"
#include "crm_consumer.h"
#include "crm_branch.h"
#include "crm_retention.h"
#include "crm_curve.h"
#include "crm_app.h"

#endif
